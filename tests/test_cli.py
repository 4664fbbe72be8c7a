"""The CLI as users run it: real subprocesses, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import PACKAGES


def impasto(*args: str, cwd: Path | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "impasto.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def test_init_scaffolds_a_package_that_predicts(tmp_path):
    r = impasto("init", "my-model", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    root = tmp_path / "my-model"
    for rel in ("config.yaml", "model/__init__.py", "model/model.py", "examples.yaml"):
        assert (root / rel).is_file(), rel
    assert (root / "data").is_dir() and (root / "packages").is_dir()
    assert "model_name: my-model" in (root / "config.yaml").read_text()
    out = impasto("predict", str(root), "-d", '{"text": "abc"}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"output": "cba"}
    example = impasto("predict", str(root), "--example", "hello")
    assert json.loads(example.stdout) == {"output": "dlrow olleh"}
    again = impasto("init", "my-model", cwd=tmp_path)
    assert again.returncode == 4 and "already exists" in again.stderr


def test_predict_from_file_and_to_output(tmp_path):
    (tmp_path / "in.json").write_text('{"prompt": "hey", "times": 2}')
    out_file = tmp_path / "out.json"
    r = impasto(
        "predict", str(PACKAGES / "typed"), "-f", str(tmp_path / "in.json"), "-o", str(out_file)
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(out_file.read_text()) == {"result": "hey hey", "length": 7}


def test_errors_are_one_line_with_distinct_exit_codes(tmp_path):
    bad_json = impasto("predict", str(PACKAGES / "typed"), "-d", "{nope")
    assert bad_json.returncode == 2
    assert bad_json.stderr.count("\n") == 1 and "not valid JSON" in bad_json.stderr
    invalid = impasto("predict", str(PACKAGES / "typed"), "-d", '{"prompt": ""}')
    assert invalid.returncode == 2 and "prompt" in invalid.stderr
    assert "Traceback" not in invalid.stderr
    missing = impasto("predict", str(tmp_path / "nowhere"), "-d", "{}")
    assert missing.returncode == 4 and "not a folder" in missing.stderr
    no_example = impasto("predict", str(PACKAGES / "echo"), "--example", "nope")
    assert no_example.returncode == 5 and "hello" in no_example.stderr
    debug = impasto("--debug", "predict", str(tmp_path / "nowhere"), "-d", "{}")
    assert debug.returncode == 4 and "Traceback" in debug.stderr
    raising = impasto("predict", str(PACKAGES / "lifecycle"), "-d", '{"raise": "v"}')
    assert raising.returncode == 10 and "ValueError: bad value: v" in raising.stderr


def test_predict_with_url_talks_to_a_running_server(serve_process):
    server = serve_process(PACKAGES / "typed")
    server.wait_ready()
    r = impasto("predict", "--url", server.url, "-d", '{"prompt": "x", "times": 3}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"result": "x x x", "length": 5}
    bad = impasto("predict", "--url", server.url, "-d", '{"prompt": "x", "times": 30}')
    assert bad.returncode == 2 and "422" in bad.stderr and "times" in bad.stderr


def test_serve_reload_picks_up_code_changes(serve_process, tmp_path):
    assert impasto("init", "live", cwd=tmp_path).returncode == 0
    root = tmp_path / "live"
    server = serve_process(root, "--reload")
    server.wait_ready()
    assert server.client.post("/predict", json={"text": "ab"}).json() == {"output": "ba"}
    model = root / "model" / "model.py"
    model.write_text(model.read_text().replace('{"output": ', '{"changed": '))
    deadline = time.monotonic() + 60
    body = None
    while time.monotonic() < deadline:
        try:
            r = server.client.post("/predict", json={"text": "ab"})
            body = r.json() if r.status_code == 200 else None
            if body == {"changed": "ba"}:
                break
        except Exception:
            pass
        time.sleep(0.3)
    assert body == {"changed": "ba"}


def test_cli_logging_writes_to_the_stderr_of_the_moment_and_keeps_other_handlers(
    monkeypatch,
) -> None:
    """A caller that swapped sys.stderr (a test runner, an embedding application) and closed
    it must not leave the CLI's handler writing to a closed stream; handlers the CLI did not
    add (a log file, a test's capture) stay installed."""
    import io
    import logging
    import sys

    from impasto.cli.output import configure_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep()
    try:
        root.addHandler(keep)
        first = io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        configure_logging("info")
        configure_logging("info")  # twice: still one handler of its own
        first.close()
        later = io.StringIO()
        monkeypatch.setattr(sys, "stderr", later)
        logging.getLogger("impasto.test").info("after the swap")
        assert "after the swap" in later.getvalue()
        assert later.getvalue().count("after the swap") == 1
        assert "Logging error" not in later.getvalue()
        assert seen == ["after the swap"]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
