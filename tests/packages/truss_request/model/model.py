"""A Truss model with a typed input, a preprocess and predict that take the request, and a
predict that may stream (its output schema says so)."""

import asyncio
from typing import AsyncGenerator, Optional, Union

from fastapi import Request
from pydantic import BaseModel, Field


class Input(BaseModel):
    prompt: str = Field(..., min_length=1, max_length=20)
    times: int = Field(1, ge=1, le=3)
    stream: bool = False


class Output(BaseModel):
    text: str
    header: Optional[str]
    path: str
    disconnected: bool


class Model:
    def __init__(self, **kwargs) -> None:
        pass

    async def preprocess(self, inputs: Input, request: Request) -> Input:
        return inputs.model_copy(update={"prompt": inputs.prompt.strip()})

    async def predict(
        self, inputs: Input, request: Request
    ) -> Union[Output, AsyncGenerator[str, None]]:
        if inputs.stream:
            return self._words(inputs)
        return Output(
            text=" ".join([inputs.prompt] * inputs.times),
            header=request.headers.get("x-test"),
            path=request.url.path,
            disconnected=await request.is_disconnected(),
        )

    async def _words(self, inputs: Input):
        for i in range(inputs.times):
            await asyncio.sleep(0)
            yield f"{inputs.prompt} {i}\n"
