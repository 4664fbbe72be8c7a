"""Several models behind one port: ``impasto serve A B``, ``impasto serve --models
models.yaml`` (names, per-model overrides, the default), lazy loading and least-recently-used
eviction under ``max_loaded`` with a request in flight (it finishes; the eviction waits),
readiness with each model's state. Gates, not sleeps: the painter package holds a
prediction until the test releases it."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from conftest import PACKAGES, ThreadServer

pytestmark = pytest.mark.timeout(300)


def _until(check, timeout: float = 60) -> bool:
    """Poll server state (not a time bound on the work: the deadline only stops a hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_serve_several_folders_from_the_command_line(serve_process):
    server = serve_process(PACKAGES / "painter", PACKAGES / "typed")
    server.wait_ready()
    http = server.client
    assert http.get("/health/ready").json() == {
        "status": "ready",
        "models": {"painter": "ready", "typed": "ready"},
    }
    ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert ids == ["painter", "typed"]
    assert http.post("/predict", json={"prompt": "first"}).json()["prompt"] == "first"
    typed = http.post("/v1/models/typed:predict", json={"prompt": "hi", "times": 2})
    assert typed.json() == {"result": "hi hi", "length": 5}
    unknown = http.post("/v1/models/nope:predict", json={})
    assert unknown.status_code == 404
    assert "this server serves: painter, typed" in unknown.json()["error"]["message"]
    assert http.get("/v1/models/typed").status_code == 200


def test_models_yaml_names_overrides_and_default(serve_process, tmp_path):
    spec = tmp_path / "models.yaml"
    spec.write_text(
        f"""
models:
  - name: words
    path: {PACKAGES / "typed"}
  - name: art
    path: {PACKAGES / "painter"}
    default: true
    overrides:
      media: {{image_format: webp}}
"""
    )
    server = serve_process(None, "--models", str(spec))
    server.wait_ready()
    http = server.client
    assert http.get("/health/ready").json()["models"] == {"words": "ready", "art": "ready"}
    art = http.post("/predict", json={"prompt": "default"})  # the default model
    assert art.json()["images"][0]["format"] == "webp"  # its override
    assert http.post("/v1/models/words:predict", json={"prompt": "w"}).json()["result"] == "w"
    cog = http.post("/models/words/predictions", json={"input": {"prompt": "c"}})
    assert cog.json()["output"]["result"] == "c"
    assert http.post("/predictions", json={"input": {"prompt": "d"}}).json()["status"] == (
        "succeeded"
    )


LAZY_YAML = """
max_loaded: 1
models:
  - name: a
    path: {painter}
  - name: b
    path: {painter}
    lazy: true
"""


@pytest.fixture
def lazy_pair(tmp_path):
    """Two painters, at most one loaded: ``a`` at start, ``b`` on its first request."""
    from impasto import build_app
    from impasto.models_file import load_models_file

    spec = tmp_path / "models.yaml"
    spec.write_text(LAZY_YAML.format(painter=PACKAGES / "painter"))
    plan = load_models_file(spec)
    server = ThreadServer(build_app(plan)).start()
    server.wait_ready()
    classes = {pkg.name: pkg.spec.cls for pkg in plan.packages}
    yield server, classes
    for cls in classes.values():
        cls.release.set()
    server.stop()


def _states(server: ThreadServer) -> dict[str, str]:
    return server.client.get("/health/ready").json()["models"]


def test_lazy_loading_and_eviction_wait_for_the_request_in_flight(lazy_pair):
    server, classes = lazy_pair
    a, b = classes["a"], classes["b"]
    assert _states(server) == {"a": "ready", "b": "unloaded"} and b.loads == 0
    assert server.client.get("/v1/models/b").status_code == 200  # available: loads on demand
    results: dict[str, httpx.Response] = {}

    def post(name: str, body: dict) -> threading.Thread:
        def run() -> None:
            results[name] = httpx.post(
                f"{server.url}/v1/models/{name}/paint", json=body, timeout=120
            )

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    held = post("a", {"prompt": "held", "hold": True})
    assert a.hold.wait(30)  # a's prediction is running and holds a
    waiting = post("b", {"prompt": "lazy"})
    # b asks for room; a has a request in flight, so the eviction waits for it
    assert _until(lambda: _states(server)["b"] == "waiting")
    assert _states(server)["a"] == "ready" and b.loads == 0
    assert "a" not in results and "b" not in results
    a.release.set()
    held.join(60)
    waiting.join(60)
    assert results["a"].status_code == 200 and results["a"].json()["prompt"] == "held"
    assert results["b"].status_code == 200 and results["b"].json()["prompt"] == "lazy"
    assert _states(server) == {"a": "unloaded", "b": "ready"} and b.loads == 1
    # a comes back on its next request, evicting b (idle)
    again = server.client.post("/v1/models/a/paint", json={"prompt": "back"})
    assert again.status_code == 200 and a.loads == 2
    assert _states(server) == {"a": "ready", "b": "unloaded"}


def test_every_protocol_reaches_a_lazy_model_by_name(lazy_pair):
    import openai

    server, _ = lazy_pair
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    assert len(c.images.generate(model="b", prompt="fox", n=2).data) == 2
    assert _states(server)["b"] == "ready"
    cog = server.client.post("/models/a/predictions", json={"input": {"prompt": "cog"}})
    assert cog.json()["status"] == "succeeded" and _states(server)["a"] == "ready"
    tensor = {"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["v2"]}
    v2 = server.client.post("/v2/models/b/infer", json={"inputs": [tensor]})
    assert v2.status_code == 200 and _states(server) == {"a": "unloaded", "b": "ready"}
    v1 = server.client.post("/v1/models/a:predict", json={"instances": ["v1"]})
    assert v1.json()["predictions"][0]["prompt"] == "v1"
    assert [m["id"] for m in c.models.list().model_dump()["data"]] == ["a", "b"]


def test_models_yaml_mistakes_are_named(tmp_path):
    from impasto import ConfigError, build_app
    from impasto.models_file import load_models_file

    spec = tmp_path / "models.yaml"
    cases = {
        "models: []": "models",
        f"models:\n  - {{path: {PACKAGES / 'painter'}, default: true}}\n"
        f"  - {{path: {PACKAGES / 'typed'}, default: true}}": "only one model",
        f"models:\n  - {{path: {PACKAGES / 'painter'}}}\n  - {{path: {PACKAGES / 'painter'}}}": (
            "two models are named painter"
        ),
        f"models:\n  - {{path: {PACKAGES / 'painter'}, colour: red}}": "colour",
    }
    for text, expected in cases.items():
        spec.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_models_file(spec)
        assert expected in str(err.value)
    spec.write_text(
        f"max_loaded: 1\nmodels:\n  - {{path: {PACKAGES / 'painter'}}}\n"
        f"  - {{path: {PACKAGES / 'typed'}}}"
    )
    with pytest.raises(ConfigError) as err:
        build_app(load_models_file(spec))
    assert "max_loaded is 1 but 2 models load at start" in str(err.value)
