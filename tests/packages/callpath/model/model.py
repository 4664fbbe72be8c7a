import asyncio
import logging
import threading

from pydantic import BaseModel, field_validator

import impasto

log = logging.getLogger("callpath.model")
VALIDATED_ON: list[str] = []  # the threads that decoded images


class Picture(BaseModel):
    image: impasto.Image
    block: bool = False

    @field_validator("image")
    @classmethod
    def _where(cls, value):
        VALIDATED_ON.append(threading.current_thread().name)
        return value


class Model:
    def __init__(self):
        self.gate = threading.Event()
        self.blocked = threading.Event()
        self.validated_on = VALIDATED_ON
        self.ticks = 0
        self.async_cancelled = asyncio.Event()

    def predict(self, data: dict) -> dict:
        if data.get("block"):
            self.blocked.set()
            self.gate.wait(30)
        return {"echo": data.get("x")}

    @impasto.endpoint(name="picture")
    def picture(self, request: Picture) -> dict:
        if request.block:
            self.blocked.set()
            self.gate.wait(30)
        return {"size": list(request.image.size)}

    @impasto.endpoint(name="pictures")
    def pictures(self, images: list[impasto.Image]) -> dict:
        return {"count": len(images)}

    @impasto.endpoint(name="ticks")
    async def ticking(self, n: int = 1000) -> dict:
        try:
            for _ in range(n):
                self.ticks += 1
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.async_cancelled.set()
            raise
        return {"ticks": self.ticks}

    @impasto.endpoint(name="chatty")
    def chatty(self, n: int = 2, context=None) -> dict:
        for i in range(n):
            log.info("step %d of %d", i + 1, n)
            print(f"printed {i + 1}")
            context.progress(i + 1, n)
        return {"said": n}

    @impasto.endpoint(name="broken_stream")
    def broken_stream(self, fail_at: int = 1):
        for i in range(3):
            if i == fail_at:
                raise RuntimeError(f"chunk {i} broke")
            yield f"chunk {i}\n"

    @impasto.endpoint(name="nan")
    def nan(self, kind: str = "nan"):
        if kind == "nan":
            return {"value": float("nan")}
        return {"value": object()}

    @impasto.endpoint(name="typed_context")
    def typed_context(self, context: str, ctx: int = 1) -> dict:
        return {"context": context, "ctx": ctx}

    @impasto.endpoint(name="long")
    def long(self, n: int = 1000, context=None) -> dict:
        """A long generation: n steps of 20 ms, each checking for cancellation."""
        import time

        for i in range(n):
            context.check()
            time.sleep(0.02)
            context.progress(i + 1, n)
        return {"steps": n}
