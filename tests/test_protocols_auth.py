"""API keys on every protocol: from ``IMPASTO_API_KEYS``, the secret ``api_keys`` (a file or
``IMPASTO_SECRET_API_KEYS``); Bearer, Api-Key and X-API-Key; probes open by default and
configurable; a 401 in each protocol's own shape, raised by the official clients as their
own errors; keys never in the server log."""

from __future__ import annotations

import numpy as np
import openai
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from conftest import PACKAGES, ThreadServer

pytestmark = pytest.mark.timeout(300)

KEYS = "key-one-1234,key-two-5678"
OPEN = [
    "/",
    "/health/live",
    "/health/ready",
    "/v1/models/painter",
    "/v1/models/painter/loaded",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/painter/ready",
    "/health-check",
    "/metrics",
]


@pytest.fixture
def keyed(monkeypatch):
    from impasto import build_app

    monkeypatch.setenv("IMPASTO_API_KEYS", KEYS)
    monkeypatch.setenv("IMPASTO_SECRETS_DIR", "/nonexistent")
    server = ThreadServer(build_app(PACKAGES / "painter")).start()
    yield server
    server.stop()


def test_probes_stay_open(keyed):
    keyed.wait_ready()
    for path in OPEN:
        assert keyed.client.get(path).status_code == 200, path


def test_each_protocol_answers_401_in_its_own_shape(keyed):
    http = keyed.client
    native = http.post("/predict", json={"prompt": "x"})
    assert native.status_code == 401 and native.json()["error"]["type"] == "unauthorized"
    assert native.headers["www-authenticate"] == "Bearer" and "x-request-id" in native.headers
    oai = http.post("/v1/images/generations", json={"prompt": "x"})
    assert oai.json()["error"]["code"] == "invalid_api_key"
    assert oai.headers["x-should-retry"] == "false"
    assert http.get("/v1/models").status_code == 401
    v2 = http.post("/v2/models/painter/infer", json={"inputs": []})
    assert v2.status_code == 401 and isinstance(v2.json()["error"], str)
    assert http.get("/v2/models/painter").status_code == 401  # metadata is not a probe
    cog = http.post("/predictions", json={"input": {}})
    assert cog.status_code == 401 and cog.json()["status"] == "failed"
    assert http.get("/openapi.json").status_code == 401
    assert "missing API key" in v2.json()["error"]


def test_the_official_clients_raise_their_own_errors(keyed):
    keyed.wait_ready()
    bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.images.generate(model="painter", prompt="x")
    assert "invalid API key" in err.value.message
    good = openai.OpenAI(base_url=keyed.url + "/v1", api_key="key-two-5678", max_retries=0)
    assert len(good.images.generate(model="painter", prompt="x").data) == 1

    prompt = triton.InferInput("prompt", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"x"], dtype=np.object_))
    client = triton.InferenceServerClient(url=keyed.url.removeprefix("http://"))
    assert client.is_server_ready()  # probes need no key
    with pytest.raises(InferenceServerException) as err:
        client.infer("painter", [prompt])
    assert err.value.status() == "401"
    r = client.infer("painter", [prompt], headers={"Authorization": "Bearer key-one-1234"})
    assert r.as_numpy("prompt")[0] == b"x"


def test_every_accepted_header_form(keyed):
    keyed.wait_ready()
    body = {"input": {"prompt": "x"}}
    for headers in (
        {"Authorization": "Bearer key-one-1234"},
        {"Authorization": "Api-Key key-two-5678"},
        {"authorization": "bearer key-one-1234"},
        {"X-API-Key": "key-two-5678"},
    ):
        assert keyed.client.post("/predictions", json=body, headers=headers).status_code == 200
    for headers in (
        {"Authorization": "Bearer key-one"},
        {"Authorization": "Basic key-one-1234"},
        {"X-API-Key": ""},
    ):
        r = keyed.client.post("/predictions", json=body, headers=headers)
        assert r.status_code == 401, headers


def test_keys_from_the_secret_file_and_configurable_open_routes(monkeypatch, tmp_path):
    from impasto import build_app
    from impasto.models_file import load_models_file

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "api_keys").write_text("file-key-0001\n")
    monkeypatch.setenv("IMPASTO_SECRETS_DIR", str(secrets))
    monkeypatch.delenv("IMPASTO_API_KEYS", raising=False)
    spec = tmp_path / "models.yaml"
    spec.write_text(
        f"auth: {{open_routes: ['/health/*']}}\nmodels:\n  - {{path: {PACKAGES / 'painter'}}}\n"
    )
    server = ThreadServer(build_app(load_models_file(spec))).start()
    try:
        server.wait_ready()
        assert server.client.get("/metrics").status_code == 401  # no longer open
        ok = server.client.get("/metrics", headers={"X-API-Key": "file-key-0001"})
        assert ok.status_code == 200
    finally:
        server.stop()
    monkeypatch.setenv("IMPASTO_SECRET_API_KEYS", "env-secret-key")
    server = ThreadServer(build_app(PACKAGES / "painter")).start()
    try:
        server.wait_ready()
        r = server.client.post("/predict", json={"prompt": "x"})
        assert r.status_code == 401
        r = server.client.post(
            "/predict", json={"prompt": "x"}, headers={"Authorization": "Bearer env-secret-key"}
        )
        assert r.status_code == 200
    finally:
        server.stop()


def test_no_keys_means_no_auth(monkeypatch):
    from impasto import build_app

    monkeypatch.delenv("IMPASTO_API_KEYS", raising=False)
    monkeypatch.delenv("IMPASTO_SECRET_API_KEYS", raising=False)
    monkeypatch.setenv("IMPASTO_SECRETS_DIR", "/nonexistent")
    server = ThreadServer(build_app(PACKAGES / "painter")).start()
    try:
        server.wait_ready()
        assert server.client.post("/predict", json={"prompt": "x"}).status_code == 200
    finally:
        server.stop()


def test_keys_never_reach_the_server_log(serve_process):
    server = serve_process(PACKAGES / "painter", env={"IMPASTO_API_KEYS": KEYS})
    server.wait_ready()
    for key in ("key-one-1234", "key-two-5678"):  # the painter logs its prompt
        r = server.client.post(
            "/predict", json={"prompt": key}, headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status_code == 200
    server.client.post("/predict", json={"prompt": "x"}, headers={"X-API-Key": "key-one-1234x"})
    server.stop()
    log = server.logs()
    assert "painting '***'" in log and "invalid API key" in log
    assert "key-one-1234" not in log and "key-two-5678" not in log


def test_keys_compare_in_constant_time_over_every_key():
    from impasto.server.auth import ApiKeys

    keys = ApiKeys.of(["a-key-0001", " b-key-0002 ", ""])
    assert len(keys.digests) == 2
    assert keys.accepts("a-key-0001") and keys.accepts("b-key-0002")
    assert not keys.accepts("a-key-000") and not keys.accepts(None) and not keys.accepts("")
