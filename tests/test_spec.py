"""Model class inspection and the in-process runner: init arguments, flavours, schemas."""

from __future__ import annotations

import asyncio
import itertools
import textwrap
from pathlib import Path

import pytest

from impasto import PackageError, RequestContext, Runner, inspect_model, load_package, parse_config

INIT_ARGS = ("config", "data_dir", "secrets", "environment")


def _write_package(root: Path, model_code: str, config: str = "model_name: t\n") -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(textwrap.dedent(model_code))
    (root / "config.yaml").write_text(config)
    (root / "data").mkdir()
    return root


async def _predict(package, payload, endpoint=None):
    runner = Runner(package.spec, package.factory(), package.config)
    assert await runner.load(), runner.load_error
    try:
        return await runner.predict(payload, endpoint)
    finally:
        await runner.aclose()


SUBSETS = [
    combo for n in range(len(INIT_ARGS) + 1) for combo in itertools.combinations(INIT_ARGS, n)
]


@pytest.mark.parametrize("args", [*SUBSETS, ("**kwargs",)], ids=lambda a: "-".join(a) or "none")
def test_every_init_argument_combination(tmp_path, args, monkeypatch, serve_thread):
    monkeypatch.setenv("IMPASTO_ENVIRONMENT", "staging")
    params = ", ".join(args)
    signature = f"self, {params}" if params else "self"
    body = "self.seen = {k: v for k, v in locals().items() if k != 'self'}"
    code = f"""
    class Model:
        def __init__({signature}):
            {body}

        def predict(self, model_input):
            seen = dict(self.seen.get("kwargs", self.seen))
            out = {{k: type(v).__name__ for k, v in seen.items()}}
            if "environment" in seen:  # the name, and the mapping a Truss model reads
                env = seen["environment"]
                out["environment"] = [isinstance(env, str), env == "staging", env.get("name")]
            return out
    """
    server = serve_thread(_write_package(tmp_path, code))  # over HTTP, as served
    response = server.client.post("/predict", json={})
    assert response.status_code == 200, response.text
    out = response.json()
    expected = set(INIT_ARGS) if args == ("**kwargs",) else set(args)
    assert set(out) == expected
    if "config" in out:
        assert out["config"] == "dict"
    if "data_dir" in out:
        assert out["data_dir"] in ("PosixPath", "WindowsPath")
    if "secrets" in out:
        assert out["secrets"] == "Secrets"
    if "environment" in out:
        assert out["environment"] == [True, True, "staging"]


def test_unknown_init_argument_fails_fast_with_signature(tmp_path):
    code = """
    class Model:
        def __init__(self, config, weights_path):
            pass

        def predict(self, x):
            return x
    """
    pattern = r"Model.__init__\(self, config, weights_path\).*weights_path"
    with pytest.raises(PackageError, match=pattern):
        load_package(_write_package(tmp_path, code))


def test_missing_predict_and_missing_class_are_clear(tmp_path):
    with pytest.raises(PackageError, match="no predict"):
        load_package(_write_package(tmp_path / "a", "class Model:\n    pass\n"))
    with pytest.raises(PackageError, match="no class `Model`"):
        load_package(_write_package(tmp_path / "b", "class Other:\n    pass\n"))
    with pytest.raises(PackageError, match=r"model\.py not found"):
        load_package(tmp_path / "a" / "data")


def test_flavours_are_read_once():
    class Model:
        async def preprocess(self, x):
            return x

        def predict(self, model_input):
            yield b"x"

    spec = inspect_model(Model)
    ep = spec.endpoints["predict"]
    assert ep.streams and ep.call.is_generator and not ep.call.is_async
    assert ep.preprocess is not None and ep.preprocess.is_async


def test_postprocess_with_streaming_predict_loads_and_each_call_is_412():
    from impasto import ModelDefinitionError

    class Model:
        def predict(self, model_input):
            yield 1

        def postprocess(self, out):
            return out

    spec = inspect_model(Model)  # loads, as under Truss...
    runner = Runner(spec, Model, parse_config({}))

    async def call():
        assert await runner.load()
        try:
            return await runner.predict({})
        finally:
            await runner.aclose()

    with pytest.raises(ModelDefinitionError, match="cannot use postprocessing") as caught:
        asyncio.run(call())  # ...and every call answers 412
    assert caught.value.status == 412


def test_parameters_become_an_input_schema():
    class Model:
        def predict(self, prompt: str, steps: int = 4, context: RequestContext = None):
            return {"prompt": prompt, "steps": steps, "has_context": context is not None}

    spec = inspect_model(Model)
    ep = spec.endpoints["predict"]
    assert ep.call.style == "fields"
    assert ep.call.context_param == "context"
    schema = ep.input_model.model_json_schema()
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["steps"]["default"] == 4


def test_config_endpoints_and_batch_length_contract(tmp_path):
    code = """
    class Model:
        def predict(self, x):
            return x

        def embed(self, model_input):
            return {"n": len(model_input.get("text", ""))}

        def bad_batch(self, inputs: list):
            return inputs[:-1]
    """
    config = textwrap.dedent("""
    model_name: t
    endpoints:
      - method: embed
      - method: bad_batch
        name: broken
        batchable: true
    """)
    pkg = load_package(_write_package(tmp_path, code, config))
    assert list(pkg.spec.endpoints) == ["predict", "embed", "broken"]
    assert asyncio.run(_predict(pkg, {"text": "abc"}, "embed")) == {"n": 3}
    from impasto import ModelError

    with pytest.raises(ModelError, match="returned 0 outputs for 1 inputs"):
        asyncio.run(_predict(pkg, {"a": 1}, "broken"))


def test_parse_config_defaults_are_sane():
    config = parse_config({})
    assert config.runtime.predict_concurrency == 1
    assert config.runtime.max_queue > 0
    assert config.batching.max_batch_size >= 1


def test_loading_a_package_leaves_the_process_as_it_was(monkeypatch):
    import os
    import sys

    from conftest import PACKAGES
    from impasto import load_package

    monkeypatch.delenv("ECHO_MODE", raising=False)
    path_before, env_before = list(sys.path), dict(os.environ)
    package = load_package(PACKAGES / "echo")  # environment_variables and a package dir
    assert list(sys.path) == path_before and dict(os.environ) == env_before
    with package.scope():  # serving it applies them...
        assert os.environ["ECHO_MODE"] == "loud"
        assert any(p.endswith("shared_lib") for p in sys.path)
    assert list(sys.path) == path_before and dict(os.environ) == env_before  # ...and undoes


@pytest.mark.parametrize("name", ["input", "data", "request", "payload"])
def test_a_single_pydantic_parameter_is_validated_whatever_its_name(name):
    from pydantic import BaseModel

    class Prompt(BaseModel):
        prompt: str
        times: int = 1

    namespace: dict = {"Prompt": Prompt}
    exec(f"def predict(self, {name}: Prompt):\n    return {name}.prompt * {name}.times", namespace)
    Model = type("Model", (), {"predict": namespace["predict"]})
    endpoint = inspect_model(Model).default_endpoint
    assert endpoint.call.style == "model" and endpoint.input_model is Prompt


def test_an_annotation_that_cannot_be_resolved_fails_at_load_naming_it():
    class Prompt:  # local: a string annotation naming it cannot be resolved later
        pass

    namespace: dict = {}
    exec("def predict(self, request: 'Prompt'):\n    return request", namespace)
    Model = type("Model", (), {"predict": namespace["predict"]})
    with pytest.raises(
        PackageError, match=r"cannot resolve the annotation .*Prompt.* of `request`"
    ):
        inspect_model(Model)
