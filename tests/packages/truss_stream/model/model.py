"""A Truss model that streams from a sync predict that *returns* a generator, serves
OpenAI-style methods, reports its health and counts its predictions in Prometheus."""

import json
import time
from typing import Any, Dict

from fastapi import Request
from prometheus_client import Counter
from starlette.responses import JSONResponse

PREDICTIONS = Counter("truss_test_predictions", "Predictions this model ran.")


class Model:
    def __init__(self, **kwargs) -> None:
        self._healthy: Any = True
        self._observed = None

    def load(self) -> None:
        pass

    def is_healthy(self) -> bool:
        if self._healthy == "raise":
            raise RuntimeError("the health probe failed")
        return self._healthy

    def predict(self, model_input: Dict, request: Request) -> Any:
        PREDICTIONS.inc()
        if "healthy" in model_input:
            self._healthy = model_input["healthy"]
            return {"healthy": self._healthy}
        if "status" in model_input:  # a response the model makes itself
            return JSONResponse({"made": "by the model"}, status_code=model_input["status"])
        if "watch" in model_input:  # streams until the client leaves, and notices it
            return self._watch(request)
        if "observed" in model_input:
            return {"observed": self._observed}
        return self._steps(  # a generator returned, not yielded
            model_input.get("n", 3), model_input.get("fail_at"), model_input.get("stall", 0)
        )

    def _steps(self, n: int, fail_at: Any, stall: float):
        for i in range(n):
            if i == fail_at:
                raise RuntimeError("the stream broke")
            if i and stall:
                time.sleep(stall)
            yield f"data: {json.dumps({'step': i})}\n\n"

    def _watch(self, request: Request):
        self._observed = None
        with request.state.watch_disconnect() as disconnected:
            yield b"first"
            self._observed = disconnected.wait(timeout=20)

    def chat_completions(self, model_input: Dict) -> Any:
        if model_input.get("stream"):
            return self._chat_chunks()
        message = {"role": "assistant", "content": "hello"}
        return {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}

    def _chat_chunks(self):
        for word in ("hel", "lo"):
            chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": word}}]}
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    async def completions(self, model_input: Dict):
        for word in model_input.get("prompt", "a b").split():
            yield word.encode()
