"""Truss's calling rules in process: what each model stage receives, the request parameter,
streams a model returns, slots, hooks, and ``/schema``'s reading of annotations."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncGenerator, Awaitable, Generator
from typing import Any, Dict, Union  # Truss models are written this way

import pytest
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request

from impasto import (
    Environment,
    Image,
    ModelHTTPError,
    PackageError,
    RequestContext,
    Runner,
    inspect_model,
    parse_config,
)
from impasto.server.adapters import truss_wire


@dataclasses.dataclass
class Latents:
    steps: int


class Prompt(BaseModel):
    prompt: str
    steps: int = 2


def run(cls: type, payload: Any, *, endpoint: str | None = None, config: dict | None = None):
    """One prediction in process; returns (output, runner stats while it ran)."""

    async def go() -> Any:
        runner = Runner(inspect_model(cls), cls, parse_config(config or {}))
        assert await runner.load(), runner.load_error
        try:
            return await runner.predict(payload, endpoint)
        finally:
            await runner.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize(
    "annotation", ["Dict", "dict[str, Any]", "Any", "Latents", "''", "object", "Dict[str, int]"]
)
def test_each_stage_gets_the_previous_value_whole_however_annotated(annotation):
    ann = "" if annotation == "''" else f": {annotation}"
    code = f"""
class Model:
    def preprocess(self, model_input{ann}):
        return Latents(steps=len(model_input))

    def predict(self, latents{ann}):
        return {{"latents": latents}}

    def postprocess(self, model_output{ann}):
        return {{"got": type(model_output).__name__, "steps": model_output["latents"].steps}}
"""
    namespace: dict[str, Any] = {"Latents": Latents, "Dict": Dict, "Any": Any}
    exec(code, namespace)
    spec = inspect_model(namespace["Model"])
    endpoint = spec.endpoints["predict"]
    assert endpoint.input_model is None  # nothing to validate: the body goes in as it is
    assert run(namespace["Model"], {"a": 1, "b": 2}) == {"got": "dict", "steps": 2}


def test_a_pydantic_first_stage_validates_and_later_stages_get_values_whole():
    class Model:
        def predict(self, inputs: Prompt) -> Dict:
            return {"prompt": inputs.prompt}

        def postprocess(self, output: Prompt) -> Dict:  # not validated: predict's dict
            return {"postprocess_got": type(output).__name__, **output}

    assert inspect_model(Model).endpoints["predict"].input_model is Prompt
    assert run(Model, {"prompt": "x"}) == {"postprocess_got": "dict", "prompt": "x"}


def test_a_single_scalar_or_media_parameter_stays_an_input_field():
    class Model:
        def predict(self, count: int = 2) -> Dict:
            return {"count": count}

    class Pictures:
        def predict(self, image: Image) -> Dict:
            return {}

    assert inspect_model(Model).endpoints["predict"].call.style == "fields"
    assert run(Model, {"count": 3}) == {"count": 3}
    assert inspect_model(Pictures).endpoints["predict"].call.style == "fields"


def test_the_request_parameter_in_every_stage_and_alone():
    class Model:
        def preprocess(self, inputs: Dict, request: Request) -> Dict:
            return {**inputs, "pre": request}

        async def predict(self, inputs: Dict, request: Request) -> Dict:
            return {**inputs, "predict": request}

        def postprocess(self, output: Dict, request: Request) -> Dict:
            return {k: v is request for k, v in output.items() if k != "x"}

    endpoint = inspect_model(Model).endpoints["predict"]
    assert endpoint.call.request_param == "request" and endpoint.reads_body
    marker = object()

    async def go() -> Any:
        runner = Runner(inspect_model(Model), Model, parse_config({}))
        await runner.load()
        p = runner.admit(endpoint)
        p.ctx.request = marker  # what the call path sets
        try:
            return await runner.run(p, {"x": 1})
        finally:
            await runner.aclose()

    assert asyncio.run(go()) == {"pre": True, "predict": True}

    class OnlyRequest:
        async def predict(self, request: Request) -> Dict:
            return {}

    only = inspect_model(OnlyRequest).endpoints["predict"]
    assert not only.call.takes_input and not only.reads_body  # the model reads the body


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "def preprocess(self, x): return x\n    def predict(self, request: Request): return 1",
            "predict must take an input",
        ),
        (
            "def predict(self, x): return x\n    def postprocess(self, request: Request): return 1",
            "postprocess must take an input",
        ),
        (
            "def predict(self, x): return x\n    async def websocket(self, ws): pass",
            "either a websocket or predictions",
        ),
        ("def websocket(self, ws): pass", "must be `async def websocket"),
        ("def predict(self, x): return x\n    def is_healthy(self, x): return True", "no argument"),
    ],
)
def test_model_definitions_truss_refuses_fail_at_load(code, message):
    namespace: dict[str, Any] = {"Request": Request}
    exec(f"class Model:\n    {code}\n", namespace)
    with pytest.raises(PackageError, match=message):
        inspect_model(namespace["Model"])


def test_a_returned_generator_streams_holding_a_slot_and_openai_methods_hold_none():
    gate = threading.Event()

    class Model:
        def predict(self, inputs: Dict) -> Any:
            def chunks():
                yield "a"
                gate.wait(30)
                yield "b"

            return chunks()

        async def chat_completions(self, inputs: Dict):
            yield "c"
            await asyncio.sleep(0)
            yield "d"

    spec = inspect_model(Model)
    assert not spec.endpoints["predict"].streams  # decided by what predict returns
    assert spec.endpoints["chat_completions"].streams
    assert not spec.endpoints["chat_completions"].slotted

    async def go() -> Any:
        runner = Runner(spec, Model, parse_config({}))
        await runner.load()
        try:
            stream = await runner.predict({})
            first = await anext(stream)
            held = runner.stats()["running"]
            chat = await runner.predict({}, "chat_completions")
            chat_chunks = [chunk async for chunk in chat]  # runs while predict holds the slot
            gate.set()
            rest = [chunk async for chunk in stream]
            return first, held, chat_chunks, rest, runner.stats()["running"]
        finally:
            gate.set()
            await runner.aclose()

    assert asyncio.run(go()) == ("a", 1, ["c", "d"], ["b"], 0)


def test_an_http_exception_is_the_models_answer():
    class Model:
        def predict(self, inputs: Dict) -> Dict:
            raise HTTPException(status_code=409, detail="busy")

    with pytest.raises(ModelHTTPError) as caught:
        run(Model, {})
    assert (caught.value.status, caught.value.detail, caught.value.type) == (
        409,
        "busy",
        "http_error",
    )


def test_is_healthy_and_setup_environment_hooks(tmp_path):
    import textwrap

    from impasto import load_package
    from impasto.serving import runner_for

    (tmp_path / "model").mkdir()
    (tmp_path / "config.yaml").write_text("model_name: hooks\n")
    (tmp_path / "model" / "model.py").write_text(
        textwrap.dedent("""
        class Model:
            def __init__(self, environment):
                self.seen = []

            async def setup_environment(self, environment):
                self.seen.append(("setup", environment.get("name"), environment == "prod"))

            def load(self):
                self.seen.append(("load",))

            async def is_healthy(self):
                return len(self.seen) > 5

            def predict(self, inputs):
                return self.seen
        """)
    )
    package = load_package(tmp_path, environment="prod")

    async def go() -> Any:
        runner = runner_for(package)
        assert await runner.load(), runner.load_error
        try:
            return runner.model.seen, await runner.healthy()
        finally:
            await runner.aclose()

    assert asyncio.run(go()) == ([("setup", "prod", True), ("load",)], False)
    without = load_package(tmp_path)  # no environment: setup_environment is not called

    async def no_env() -> Any:
        runner = runner_for(without)
        await runner.load()
        try:
            return runner.model.seen
        finally:
            await runner.aclose()

    assert asyncio.run(no_env()) == [("load",)]


def test_the_environment_reads_as_a_name_and_as_a_mapping():
    import json
    import pickle

    env = Environment("production")
    assert env == "production" and f"{env}" == "production" and json.dumps(env) == '"production"'
    assert env.get("name") == env["name"] == "production" and env.get("other") is None
    assert dict(env) == {"name": "production"} == env and "name" in env
    assert env[:4] == "prod" and hash(env) == hash("production")
    assert pickle.loads(pickle.dumps(env)).get("name") == "production"


class Out(BaseModel):
    text: str


def _schema(annotation: Any) -> Any:
    def predict(self, inputs: Prompt) -> None: ...

    predict.__annotations__["return"] = annotation
    return truss_wire.schema(type("Model", (), {"predict": predict}))


def test_schema_reads_output_annotations_as_truss_does():
    plain = _schema(Out)
    assert plain["input_schema"] == Prompt.model_json_schema()
    assert (plain["output_schema"], plain["supports_streaming"]) == (Out.model_json_schema(), False)
    streaming = _schema(Generator[str, None, None])
    assert (streaming["output_schema"], streaming["supports_streaming"]) == (None, True)
    awaited = _schema(Awaitable[Out])
    assert (awaited["output_schema"]["title"], awaited["supports_streaming"]) == ("Out", False)
    either = _schema(Union[Out, AsyncGenerator[str, None]])
    assert (either["output_schema"]["title"], either["supports_streaming"]) == ("Out", True)
    untyped = _schema(dict)
    assert (untyped["output_schema"], untyped["supports_streaming"]) == (None, None)

    class Nothing:
        def predict(self, inputs: Dict) -> Dict: ...

    assert truss_wire.schema(Nothing) is None


def test_context_and_request_parameters_side_by_side():
    class Model:
        def predict(self, inputs: Dict, request: Request, context: RequestContext) -> Dict:
            return {"request": request, "context": type(context).__name__}

    call = inspect_model(Model).endpoints["predict"].call
    assert (call.request_param, call.context_param, call.style) == ("request", "context", "raw")
    assert run(Model, {}) == {"request": None, "context": "RequestContext"}  # in process
