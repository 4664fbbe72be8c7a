"""Secrets come from a folder and from IMPASTO_SECRET_* and never show anywhere."""

from __future__ import annotations

from conftest import PACKAGES

API_KEY = "sk-live-0123456789abcdef"
DB_PASSWORD = "hunter2-very-secret"


def test_secrets_resolve_and_never_leak(serve_process, tmp_path):
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "api_key").write_text(API_KEY + "\n")
    server = serve_process(
        PACKAGES / "secrets",
        "--secrets-dir",
        str(folder),
        env={"IMPASTO_SECRET_DB_PASSWORD": DB_PASSWORD},
    )
    server.wait_ready()
    out = server.client.post("/predict", json={}).json()
    assert out == {
        "names": ["api_key", "db_password", "with_default"],
        "api_key_length": len(API_KEY),
        "db_password_length": len(DB_PASSWORD),
        "with_default_matches": True,
    }
    leak = server.client.post("/predict", json={"leak": True})
    assert leak.status_code == 500
    assert DB_PASSWORD not in leak.text and "***" in leak.text
    texts = [
        server.client.get(path).text
        for path in ("/openapi.json", "/health/ready", "/metrics", "/v1/models/secrets")
    ]
    server.stop()
    logs = server.logs()
    assert "loaded with secrets" in logs  # the model did log them...
    for text in [logs, *texts]:
        assert API_KEY not in text  # ...but the values never appear
        assert DB_PASSWORD not in text


def test_an_embedded_app_redacts_its_logs_tracebacks_included(serve_thread, caplog, monkeypatch):
    """No CLI, no logging setup: whoever embeds the app gets redacted records anyway."""
    import logging

    monkeypatch.setenv("IMPASTO_SECRET_API_KEY", API_KEY)
    monkeypatch.setenv("IMPASTO_SECRET_DB_PASSWORD", DB_PASSWORD)
    with caplog.at_level(logging.INFO):
        server = serve_thread(PACKAGES / "secrets")
        leak = server.client.post("/predict", json={"leak": True})
        try:
            raise RuntimeError(f"a library error quoting {API_KEY}")
        except RuntimeError:
            logging.getLogger("someone.else").exception("while serving")
    assert leak.status_code == 500
    text = caplog.text
    assert "loaded with secrets" in text and "Traceback" in text and "***" in text
    assert API_KEY not in text and DB_PASSWORD not in text
    for record in caplog.records:
        assert API_KEY not in (record.exc_text or "") and DB_PASSWORD not in (record.exc_text or "")
