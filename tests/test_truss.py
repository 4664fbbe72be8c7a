"""Truss packages under `impasto serve`, answering as Truss's own server does.

Each package under ``tests/packages/truss_*`` is written as Truss's docs write models. It is
served by ``impasto serve`` and driven over HTTP; every check below asserts impasto's answer
(protocols.md §1.7 and the Truss rules). When Truss's own server can run here
(``tests/truss_env.py``), each package is served by it too, and ``test_truss_server_*``
assert that it answers the very same requests the very same way: status, content type,
Baseten's error headers, chunked or not, and the body byte for byte.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import msgpack_numpy
import numpy as np
import pytest

import truss_env
from conftest import PACKAGES, ProcessServer

pytestmark = pytest.mark.timeout(900)

ERROR_HEADERS_MODEL = {"x-baseten-error-source": "04", "x-baseten-error-code": "600"}
ERROR_HEADERS_CLIENT = {"x-baseten-error-source": "04", "x-baseten-error-code": "700"}
NOT_READY = b'{"error":"Model with name model is not ready."}'
MODEL_ERROR = b'{"error":"Internal Server Error (in model/chainlet)."}'
P = "/v1/models/model:predict"
OPENAI_UA = {"user-agent": "OpenAI/Python 1.61.0", "accept": "application/json"}


# -- answers, comparable across servers -----------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What a client can tell about a response: ``status`` is "broken" when the body ended
    without its last chunk."""

    status: int | str
    content_type: str | None
    error_source: str | None
    error_code: str | None
    chunked: bool
    body: Any

    def json(self) -> Any:
        return json.loads(self.body)


def ask(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Answer:
    """One request, read chunk by chunk; a msgpack body is decoded (arrays as lists)."""
    chunks: list[bytes] = []
    try:
        with client.stream(method, path, **kwargs) as r:
            for chunk in r.iter_raw():
                chunks.append(chunk)
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return Answer("broken", None, None, None, True, b"".join(chunks))
    body: Any = b"".join(chunks)
    ctype = r.headers.get("content-type")
    if ctype == "application/octet-stream" and r.headers.get("transfer-encoding") != "chunked":
        body = _plain(msgpack.unpackb(body, object_hook=msgpack_numpy.decode))
    return Answer(
        r.status_code,
        ctype,
        r.headers.get("x-baseten-error-source"),
        r.headers.get("x-baseten-error-code"),
        r.headers.get("transfer-encoding") == "chunked",
        body,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def packed(value: Any) -> dict[str, Any]:
    """A msgpack request body, as Truss's clients send numpy arrays."""
    content = msgpack.packb(value, default=msgpack_numpy.encode)
    return {"content": content, "headers": {"content-type": "application/octet-stream"}}


# -- servers: impasto always, Truss's own when it can run here -------------------------------


@dataclass
class Pair:
    impasto: ProcessServer
    truss: truss_env.TrussServer | None
    loading: dict[str, list[Answer]] | None = None

    def both(self) -> list[httpx.Client]:
        return [self.impasto.client] + ([self.truss.client] if self.truss else [])


@pytest.fixture(scope="module")
def truss_python() -> Path | None:
    """Truss's server venv; None (comparisons skip) when it cannot be built outside CI."""
    try:
        return truss_env.truss_python()
    except truss_env.Unavailable as exc:
        if truss_env.IN_CI:
            pytest.fail(str(exc))
        return None


@pytest.fixture(scope="module")
def served(tmp_path_factory, truss_python) -> Any:
    """Start a package under both servers (once per module)."""
    pairs: dict[str, Pair] = {}

    def start(
        name: str,
        package: Path | None = None,
        env: dict[str, str] | None = None,
        *,
        args: tuple[str, ...] = (),
        truss_env_extra: dict[str, str] | None = None,
        ready: bool = True,
    ) -> Pair:
        if name in pairs:
            return pairs[name]
        package = package or PACKAGES / name
        work = tmp_path_factory.mktemp(name)
        ours = ProcessServer(package, *args, env=env, log=work / "impasto.log")
        theirs = None
        if truss_python is not None:
            extra = {**(env or {}), **(truss_env_extra or {})}
            theirs = truss_env.TrussServer(truss_python, package, work / "truss", extra)
        pair = pairs[name] = Pair(ours.wait_live(), theirs and theirs.wait_live())
        if ready:
            ours.wait_ready()
            if theirs:
                theirs.wait_ready()
        return pair

    yield start
    for pair in pairs.values():
        pair.impasto.stop()
        if pair.truss:
            pair.truss.stop()


LOADING_ASKS = [
    ("GET", "/", {}),
    ("GET", "/v1/models/model", {}),
    ("GET", "/v1/models/model/loaded", {}),
    ("GET", "/ping", {}),
    ("GET", "/v1/models/model/schema", {}),
    ("POST", P, {"json": {"prompt": "x"}}),
    ("POST", "/invocations", {"json": {"prompt": "x"}}),
    ("POST", "/v1/chat/completions", {"json": {}}),
]


@pytest.fixture(scope="module")
def stages(served, tmp_path_factory) -> Pair:
    """truss_stages, asked what it answers while load() is held open, then loaded."""
    gates = tmp_path_factory.mktemp("gates")
    pair = served(
        "truss_stages",
        env={"TRUSS_TEST_LOAD_GATE": str(gates / "impasto")},
        args=("--environment", "staging"),
        truss_env_extra={
            "TRUSS_TEST_ENVIRONMENT": "staging",
            "TRUSS_TEST_LOAD_GATE": str(gates / "truss"),
        },
        ready=False,
    )
    servers = {"impasto": pair.impasto, "truss": pair.truss}
    pair.loading = {}
    for who, server in servers.items():
        if server is not None:  # asked once load() is running (the model is built)
            assert _eventually(lambda who=who: (gates / f"{who}.waiting").exists(), 120)
            pair.loading[who] = [ask(server.client, m, path, **kw) for m, path, kw in LOADING_ASKS]
            (gates / who).touch()
    pair.impasto.wait_ready()
    if pair.truss:
        pair.truss.wait_ready()
    return pair


@pytest.fixture(scope="module")
def stream(served) -> Pair:
    return served("truss_stream")


@pytest.fixture(scope="module")
def typed(served) -> Pair:
    return served("truss_request")


@pytest.fixture(scope="module")
def body_only(served) -> Pair:
    return served("truss_body")


@pytest.fixture(scope="module")
def ws(served) -> Pair:
    return served("truss_ws")


@pytest.fixture(scope="module")
def sd(served, tmp_path_factory) -> Pair:
    """The Stable Diffusion package with a tiny random-weight pipeline in its data dir."""
    from impasto.diffusers.tiny import build_tiny_sd

    package = tmp_path_factory.mktemp("sd") / "truss_sd"
    shutil.copytree(PACKAGES / "truss_sd", package)
    build_tiny_sd(package / "data" / "tiny-sd")
    fallback = {"TRUSS_TEST_FALLBACK_PATH": truss_env.own_site_packages()}
    return served("truss_sd", package, truss_env_extra=fallback)


# -- §1.7.1 and §1.4: liveness and readiness ------------------------------------------------


def test_while_loading_liveness_answers_and_everything_else_is_503(stages):
    live, ready, loaded, ping, schema, predict, invocations, chat = stages.loading["impasto"]
    assert (live.status, live.body) == (200, b"true")
    for answer in (ready, loaded, ping, predict, invocations, chat):
        assert (answer.status, answer.body) == (503, NOT_READY)
        assert (answer.error_source, answer.error_code) == ("04", "600")
    assert schema.status == 503
    assert schema.json() == {"error": "Schema not available, please try again later."}


def test_once_loaded_every_name_is_the_model(stages):
    client = stages.impasto.client
    for path in ("/v1/models/model", "/v1/models/whatever", "/v1/models/model/loaded", "/ping"):
        r = client.get(path)
        assert (r.status_code, r.content) == (200, b"{}"), path
    assert client.get("/v1/models/model:predict").content == b"{}"  # Truss's quirk, kept
    assert client.get("/").content == b"true"


def test_is_healthy_drives_readiness_only(stream):
    client = stream.impasto.client
    try:
        for healthy in (False, "raise"):
            client.post(P, json={"healthy": healthy})
            r = client.get("/v1/models/model")
            assert (r.status_code, r.content) == (503, NOT_READY)
            assert r.headers["x-baseten-error-code"] == "600"
            assert client.get("/health/ready").status_code == 503  # impasto's probe agrees
            assert client.get("/v1/models/model/loaded").status_code == 200
            assert client.get("/ping").status_code == 200
            assert client.post(P, json={"n": 1}).status_code == 200  # still served
        client.post(P, json={"healthy": None})  # None: no opinion, readiness as loaded
        assert client.get("/v1/models/model").status_code == 200
    finally:
        client.post(P, json={"healthy": True})
    assert client.get("/v1/models/model").status_code == 200


# -- §1.7.3 and the calling rules ------------------------------------------------------------


def test_predict_without_content_type_runs_every_stage_with_the_whole_value(stages):
    r = ask(stages.impasto.client, "POST", P, content=b'{"prompt": "x"}')
    assert (r.status, r.content_type, r.chunked) == (200, "application/json", False)
    expected = {
        "input": {"prompt": "x"},
        "greeting": "hello from data",
        "environment": "staging",  # environment.get("name") in __init__
        "setup_with": {"name": "staging", "loaded": False},  # setup_environment before load
        "model_name": "truss-stages",
        "mean": 0.5,  # numpy scalars and arrays, written by a numpy-aware json.dumps
        "counts": [0, 1, 2],
        "stages": ["preprocess", "predict", "postprocess"],
    }
    assert r.body == json.dumps(expected).encode()  # Truss's spacing: {"a": 1, "b": 2}


def test_a_dict_annotated_postprocess_receives_the_pipeline_output_object(sd):
    r = ask(sd.impasto.client, "POST", P, json={"prompt": "a cat", "seed": 0, "steps": 2})
    assert (r.status, r.content_type) == (200, "application/json")
    out = r.json()
    assert out["status"] == "success"
    assert out["output"] == "StableDiffusionPipelineOutput" and out["keys"] == ["images"]
    import base64
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(out["data"])))
    assert image.size == (64, 64) and out["size"] == [64, 64]


def test_a_typed_input_is_validated_and_the_request_reaches_each_stage(typed):
    client = typed.impasto.client
    r = ask(client, "POST", P, json={"prompt": " hi ", "times": 2}, headers={"x-test": "yes"})
    assert (r.status, r.content_type) == (200, "application/json")
    # a pydantic output is its own compact JSON; the preprocess saw the typed input
    assert r.body == (
        b'{"text":"hi hi","header":"yes","path":"/v1/models/model:predict","disconnected":false}'
    )
    bad = ask(client, "POST", P, json={"prompt": "", "times": 9})
    assert (bad.status, bad.error_code) == (400, "700")
    assert bad.json()["error"] == (
        "Input Parsing Errors:\n  `prompt`: String should have at least 1 character.\n"
        "  `times`: Input should be less than or equal to 3."
    )
    not_object = ask(client, "POST", P, content=b"[1]")
    assert not_object.json()["error"] == (
        "Input Parsing Error:\n  ``: Input should be a valid dictionary or instance of Input."
    )


def test_a_predict_taking_only_the_request_reads_the_body_itself(body_only):
    raw = b"\x00\xffnot json{"
    r = ask(body_only.impasto.client, "POST", P, content=raw, headers={"content-type": "x/y"})
    assert r.status == 200
    out = r.json()
    assert out["length"] == len(raw) and out["content_type"] == "x/y"
    assert out["disconnected"] is False


# -- §1.7.4 and §1.7.5: errors --------------------------------------------------------------


def test_invalid_json_is_400_with_the_json_error(stages):
    r = ask(stages.impasto.client, "POST", P, content=b"{bad")
    assert (r.status, r.error_source, r.error_code) == (400, "04", "700")
    assert r.json() == {
        "error": "Invalid JSON payload: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)"
    }
    empty = ask(stages.impasto.client, "POST", P, content=b"")
    assert (
        empty.json()["error"] == "Invalid JSON payload: Expecting value: line 1 column 1 (char 0)"
    )


def test_a_model_exception_is_500_and_its_cause_goes_to_the_log(stages):
    client = stages.impasto.client
    r = client.post(P, json={"raise": "x"}, headers={"x-request-id": "req-truss-17"})
    assert (r.status_code, r.content) == (500, MODEL_ERROR)
    assert {k: r.headers[k] for k in ERROR_HEADERS_MODEL} == ERROR_HEADERS_MODEL
    assert _eventually(lambda: "bad value: x" in stages.impasto.logs())
    assert "req-truss-17" in stages.impasto.logs()
    http = client.post(P, json={"http": True})
    assert (http.status_code, http.content) == (422, b'{"error":"bad steps"}')
    assert http.headers["x-baseten-error-code"] == "600"
    assert client.post(P, json={"prompt": "again"}).status_code == 200


def test_a_streaming_predict_with_a_postprocess_answers_what_truss_answers(stages):
    # A Truss server raises its ModelDefinitionError inside its model-error guard, so the
    # client sees the model-error 500 (protocols.md's 412 is never reached); impasto's own
    # routes say what is wrong, with a 412.
    r = stages.impasto.client.post(P, json={"stream": True})
    assert (r.status_code, r.content) == (500, MODEL_ERROR)
    assert _eventually(lambda: "cannot use postprocessing" in stages.impasto.logs())
    own = stages.impasto.client.post("/predict", json={"stream": True})
    assert own.status_code == 412
    assert own.json()["error"]["type"] == "model_definition_error"


def test_impasto_routes_keep_impastos_error_object(stages):
    client = stages.impasto.client
    bad = client.post("/predict", content=b"{bad")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "malformed_input"
    err = client.post("/predict", json={"raise": "x"}).json()["error"]
    assert err == {"type": "model_error", "message": "ValueError: bad value: x", "field": None}
    http = client.post("/predict", json={"http": True})
    assert http.status_code == 422
    assert http.json()["error"] == {"type": "http_error", "message": "bad steps", "field": None}
    assert "x-baseten-error-code" not in http.headers


def test_a_response_the_model_makes_passes_through(stream):
    teapot = ask(stream.impasto.client, "POST", P, json={"status": 418})
    assert (teapot.status, teapot.body) == (418, b'{"made":"by the model"}')
    assert (teapot.error_source, teapot.error_code) == ("04", "700")
    created = ask(stream.impasto.client, "POST", P, json={"status": 201})
    assert (created.status, created.error_code) == (201, None)


# -- §1.7.6: msgpack ------------------------------------------------------------------------


def test_msgpack_in_and_out_with_numpy_arrays(stages):
    r = ask(stages.impasto.client, "POST", P, **packed({"array": np.arange(3)}))
    assert (r.status, r.content_type) == (200, "application/octet-stream")
    assert r.body == {
        "doubled": {"ndarray": [0, 2, 4], "dtype": "int64"},
        "stages": ["preprocess", "postprocess"],
    }
    broken = ask(stages.impasto.client, "POST", P, **packed(1) | {"content": b"\x92\x01"})
    assert (broken.status, broken.error_code) == (400, "700")
    assert broken.json() == {"error": "Unpack failed: incomplete input"}


# -- §1.7.7: streaming ----------------------------------------------------------------------


STEPS = b'data: {"step": 0}\n\ndata: {"step": 1}\n\n'


def test_a_sync_predict_returning_a_generator_streams_raw_chunks(stream):
    client = stream.impasto.client
    raw = ask(client, "POST", P, json={"n": 2})
    assert (raw.status, raw.content_type, raw.chunked, raw.body) == (
        200,
        "application/octet-stream",
        True,
        STEPS,
    )
    gathered = ask(client, "POST", P, json={"n": 2}, headers={"accept": "application/json"})
    assert (gathered.content_type, gathered.chunked) == ("application/json", False)
    assert gathered.json() == STEPS.decode()
    openai = ask(client, "POST", P, json={"n": 2}, headers=OPENAI_UA)
    assert (openai.content_type, openai.body) == ("application/octet-stream", STEPS)
    with_charset = {"accept": "application/json; charset=utf-8"}  # not exactly: streamed
    assert ask(client, "POST", P, json={"n": 2}, headers=with_charset).chunked


def test_an_error_mid_stream_ends_the_stream_and_the_server_keeps_serving(stream):
    r = ask(stream.impasto.client, "POST", P, json={"n": 3, "fail_at": 1})
    assert (r.status, r.body) == (200, b'data: {"step": 0}\n\n')
    assert ask(stream.impasto.client, "POST", P, json={"n": 1}).status == 200


def test_a_stalled_stream_breaks_off_after_streaming_read_timeout(stream):
    started = time.monotonic()
    r = ask(stream.impasto.client, "POST", P, json={"n": 3, "stall": 2.5})
    assert (r.status, r.body) == ("broken", b'data: {"step": 0}\n\n')  # timeout: 1 s
    assert time.monotonic() - started < 2.5


def test_a_model_notices_its_client_leaving(stream):
    for client in stream.both():
        with client.stream("POST", P, json={"watch": True}) as r:
            assert next(r.iter_raw()) == b"first"
        assert _eventually(lambda c=client: c.post(P, json={"observed": 1}).json()["observed"])


# -- §1.7.8 and §1.7.9: aliases and OpenAI-style methods ------------------------------------


def test_invocations_and_predict_binary_are_predict(typed):
    client = typed.impasto.client
    for path in ("/invocations", "/v1/models/model:predict_binary", "/v1/models/any:predict"):
        r = ask(client, "POST", path, json={"prompt": "p"})
        assert r.status == 200 and r.json()["text"] == "p" and r.json()["path"] == path


def test_openai_methods_and_their_streams(stream):
    client = stream.impasto.client
    chat = ask(client, "POST", "/v1/chat/completions", json={})
    assert chat.status == 200 and chat.json()["choices"][0]["message"]["content"] == "hello"
    streamed = ask(client, "POST", "/v1/chat/completions", json={"stream": True}, headers=OPENAI_UA)
    assert streamed.chunked and streamed.body.endswith(b"data: [DONE]\n\n")
    words = ask(client, "POST", "/v1/completions", json={"prompt": "x y z"})  # async generator
    assert (words.chunked, words.body) == (True, b"xyz")
    missing = ask(client, "POST", "/v1/embeddings", json={})
    assert (missing.status, missing.error_code) == (404, "700")
    assert missing.json() == {"error": "`embeddings` must only be called if model has it."}


def test_chat_completions_without_the_method_is_404(stages):
    r = ask(stages.impasto.client, "POST", "/v1/chat/completions", json={})
    assert (r.status, r.error_source, r.error_code) == (404, "04", "700")
    assert r.json() == {"error": "`chat_completions` must only be called if model has it."}


# -- schema, websocket, metrics, several models ---------------------------------------------


def test_schema_reports_the_typed_io_and_streaming(typed, stages):
    import importlib.util

    path = PACKAGES / "truss_request" / "model" / "model.py"
    spec = importlib.util.spec_from_file_location("truss_request_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the package's own Input and Output
    Input, Output = module.Input, module.Output
    doc = typed.impasto.client.get("/v1/models/model/schema").json()
    assert doc == {
        "input_schema": Input.model_json_schema(),
        "output_schema": Output.model_json_schema(),
        "supports_streaming": True,  # Union[Output, AsyncGenerator[...]]
    }
    untyped = stages.impasto.client.get("/v1/models/model/schema")
    assert (untyped.status_code, untyped.content) == (404, b'{"error":"No schema found"}')


def websocket_session(port: int, messages: list[str]) -> list[Any]:
    """Send ``messages`` (an answer is read after each but ``done``/``raise``), then report
    how the server closed the socket."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    out: list[Any] = []
    try:
        with connect(f"ws://127.0.0.1:{port}/v1/websocket", open_timeout=30) as socket:
            for message in messages:
                socket.send(message)
                if message not in ("done", "raise"):
                    out.append(socket.recv(timeout=30))
            out.append(("message", socket.recv(timeout=30)))
    except ConnectionClosed as exc:
        out.append(("closed", exc.rcvd.code if exc.rcvd else None, exc.rcvd and exc.rcvd.reason))
    except InvalidStatus as exc:
        out.append(("refused", exc.response.status_code))
    return out


def test_a_websocket_model(ws, stages):
    port = ws.impasto.port
    assert websocket_session(port, ["hi", "there", "done"]) == ["HI", "THERE", ("closed", 1000, "")]
    assert websocket_session(port, ["hi", "raise"]) == [
        "HI",
        ("closed", 1011, "Internal Server Error (in model/chainlet)."),
    ]
    none = websocket_session(stages.impasto.port, ["hi"])
    assert none == [("closed", 1003, "WebSocket is not implemented on this deployment.")]
    r = ask(ws.impasto.client, "POST", P, json={})
    assert (r.status, r.error_code) == (404, "700")


def test_metrics_include_what_the_model_registers(stream):
    client = stream.impasto.client
    client.post(P, json={"n": 1})
    from conftest import metric

    text = client.get("/metrics").text
    assert metric(text, "truss_test_predictions_total") >= 1  # the model's own counter
    assert metric(text, "impasto_requests_total", endpoint="predict", outcome="ok") >= 1


def test_several_models_route_by_name(serve_thread):
    from impasto import load_package

    packages = [load_package(PACKAGES / "truss_stages"), load_package(PACKAGES / "truss_body")]
    server = serve_thread(packages)
    client = server.client
    assert client.get("/v1/models/truss-body").content == b"{}"
    assert client.get("/v1/models/nope").status_code == 404
    r = client.post("/v1/models/truss-body:predict", content=b"raw")
    assert r.json()["length"] == 3
    staged = client.post("/v1/models/truss-stages:predict", json={"prompt": "x"})
    assert staged.json()["stages"] == ["preprocess", "predict", "postprocess"]


def test_a_config_written_by_truss_tooling_loads_without_warnings():
    import warnings

    from impasto import load_package

    text = (PACKAGES / "truss_stages" / "config.yaml").read_text()
    assert "external_data: null" in text and "truss_server_version_override: null" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        package = load_package(PACKAGES / "truss_stages")
    assert package.config.external_data == [] and package.config.runtime.predict_concurrency == 1
    assert package.kind == "truss"


# -- Truss's own server, the same requests --------------------------------------------------


def _cases() -> list[tuple[str, str, Callable[[httpx.Client], Any]]]:
    """(id, package fixture, the requests): each answers a list of Answers."""

    def one(method: str, path: str, **kw: Any) -> Callable[[httpx.Client], list[Answer]]:
        return lambda client: [ask(client, method, path, **kw)]

    def healthy_sequence(client: httpx.Client) -> list[Answer]:
        out = []
        for value in (False, "raise", None, True):
            out.append(ask(client, "POST", P, json={"healthy": value}))
            paths = ("/v1/models/model", "/v1/models/model/loaded", "/ping")
            out += [ask(client, "GET", path) for path in paths]
        return out

    json_ = {"accept": "application/json"}
    return [
        ("predict-no-content-type", "stages", one("POST", P, content=b'{"prompt":"x"}')),
        ("predict-any-name", "stages", one("POST", "/v1/models/anything:predict", json={})),
        ("predict-binary", "stages", one("POST", "/v1/models/m:predict_binary", json={})),
        ("invocations", "stages", one("POST", "/invocations", json={"prompt": "x"})),
        ("invalid-json", "stages", one("POST", P, content=b"{bad")),
        ("empty-body", "stages", one("POST", P, content=b"")),
        ("nan-accepted", "stages", one("POST", P, content=b'{"a": NaN}')),
        ("not-an-object", "stages", one("POST", P, content=b"[1, 2]")),
        ("model-error", "stages", one("POST", P, json={"raise": "x"})),
        ("http-exception", "stages", one("POST", P, json={"http": True})),
        ("stream-with-postprocess", "stages", one("POST", P, json={"stream": True})),
        ("msgpack", "stages", one("POST", P, **packed({"array": np.arange(3)}))),
        ("msgpack-invalid", "stages", one("POST", P, **packed(1) | {"content": b"\xc1"})),
        ("msgpack-incomplete", "stages", one("POST", P, **packed(1) | {"content": b"\x92\x01"})),
        ("msgpack-extra", "stages", one("POST", P, **packed(1) | {"content": b"\x01\x02"})),
        ("liveness", "stages", one("GET", "/")),
        ("readiness", "stages", one("GET", "/v1/models/model")),
        ("readiness-any-name", "stages", one("GET", "/v1/models/whatever")),
        ("readiness-quirk", "stages", one("GET", "/v1/models/model:predict")),
        ("loaded", "stages", one("GET", "/v1/models/model/loaded")),
        ("ping", "stages", one("GET", "/ping")),
        ("schema-none", "stages", one("GET", "/v1/models/model/schema")),
        ("chat-missing", "stages", one("POST", "/v1/chat/completions", json={})),
        ("chat-missing-bad-json", "stages", one("POST", "/v1/chat/completions", content=b"{")),
        ("stream-raw", "stream", one("POST", P, json={"n": 2})),
        ("stream-gathered", "stream", one("POST", P, json={"n": 2}, headers=json_)),
        ("stream-openai-ua", "stream", one("POST", P, json={"n": 2}, headers=OPENAI_UA)),
        ("stream-error-mid-way", "stream", one("POST", P, json={"n": 3, "fail_at": 1})),
        ("stream-stalled", "stream", one("POST", P, json={"n": 3, "stall": 2.5})),
        ("response-418", "stream", one("POST", P, json={"status": 418})),
        ("response-201", "stream", one("POST", P, json={"status": 201})),
        ("chat", "stream", one("POST", "/v1/chat/completions", json={})),
        ("chat-stream", "stream", one("POST", "/v1/chat/completions", json={"stream": True})),
        (
            "chat-stream-gathered",
            "stream",
            one("POST", "/v1/chat/completions", json={"stream": True}, headers=json_),
        ),
        ("completions-async-gen", "stream", one("POST", "/v1/completions", json={"prompt": "a b"})),
        ("embeddings-missing", "stream", one("POST", "/v1/embeddings", json={})),
        ("is-healthy", "stream", healthy_sequence),
        ("typed", "typed", one("POST", P, json={"prompt": " hi ", "times": 2})),
        ("typed-one-error", "typed", one("POST", P, json={"prompt": ""})),
        ("typed-two-errors", "typed", one("POST", P, json={"times": "x"})),
        ("typed-invalid-json", "typed", one("POST", P, content=b"{bad")),
        ("typed-empty", "typed", one("POST", P, content=b"")),
        ("typed-not-object", "typed", one("POST", P, content=b'"str"')),
        ("typed-msgpack", "typed", one("POST", P, **packed({"prompt": "m"}))),
        ("typed-stream", "typed", one("POST", P, json={"prompt": "a", "times": 2, "stream": 1})),
        ("typed-schema", "typed", one("GET", "/v1/models/model/schema")),
        ("typed-chat-missing", "typed", one("POST", "/v1/chat/completions", json={"x": 1})),
        ("request-only", "body_only", one("POST", P, content=b"\x00raw{")),
        ("request-only-msgpack", "body_only", one("POST", P, **packed(1) | {"content": b"\xc1"})),
        ("stable-diffusion", "sd", one("POST", P, json={"prompt": "a cat", "seed": 0})),
    ]


CASES = _cases()


@pytest.fixture
def reference_pair(request) -> Callable[[str], Pair]:
    def get(name: str) -> Pair:
        pair = request.getfixturevalue(name)
        if pair.truss is None:
            pytest.skip("Truss's own server cannot run here (its venv could not be built)")
        return pair

    return get


@pytest.mark.parametrize(("case", "package", "exchange"), CASES, ids=[c[0] for c in CASES])
def test_truss_server_gives_the_same_answers(reference_pair, case, package, exchange):
    pair = reference_pair(package)
    theirs = exchange(pair.truss.client)
    ours = exchange(pair.impasto.client)
    assert ours == theirs


def test_truss_server_gives_the_same_answers_while_loading(stages):
    if stages.truss is None:
        pytest.skip("Truss's own server cannot run here (its venv could not be built)")
    for ask_, ours, theirs in zip(
        LOADING_ASKS, stages.loading["impasto"], stages.loading["truss"], strict=True
    ):
        assert ours == theirs, ask_


def test_truss_server_gives_the_same_websocket_sessions(reference_pair):
    pair, stages = reference_pair("ws"), reference_pair("stages")
    for messages in (["hi", "there", "done"], ["hi", "raise"]):
        assert websocket_session(pair.impasto.port, messages) == websocket_session(
            pair.truss.port, messages
        )
    assert websocket_session(stages.impasto.port, ["x"]) == websocket_session(
        stages.truss.port, ["x"]
    )


def test_where_impasto_answers_differently_from_truss(reference_pair):
    """The deliberate differences (docs/compat.md), pinned on both sides."""
    pair = reference_pair("stream")
    early = {"json": {"n": 2, "fail_at": 0}}
    gathered = {"json": {"n": 3, "fail_at": 1}, "headers": {"accept": "application/json"}}
    with httpx.Client(base_url=pair.truss.url, timeout=60) as truss:  # fresh connections
        theirs = [ask(truss, "POST", P, **early), ask(truss, "POST", P, **gathered)]
    ours = [ask(pair.impasto.client, "POST", P, **kw) for kw in (early, gathered)]
    # an error before the first chunk: Truss has answered 200 and sends nothing more;
    # impasto answers the model-error 500
    assert (theirs[0].status, theirs[0].chunked, theirs[0].body) == (200, True, b"")
    assert (ours[0].status, ours[0].error_code, ours[0].body) == (500, "600", MODEL_ERROR)
    # an error while gathering: Truss lets the model's exception escape its guard, and its
    # text reaches the client; impasto answers the model-error 500
    assert (theirs[1].status, theirs[1].error_code) == (500, "500")
    assert theirs[1].json() == {"error": "Unhandled exception: RuntimeError: the stream broke"}
    assert (ours[1].status, ours[1].error_code, ours[1].body) == (500, "600", MODEL_ERROR)


def _eventually(check: Callable[[], Any], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False
