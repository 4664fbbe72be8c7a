from typing import Literal

from pydantic import BaseModel, Field


class Request(BaseModel):
    prompt: str = Field(..., min_length=1, max_length=50, description="What to repeat.")
    times: int = Field(1, ge=1, le=5)
    style: Literal["plain", "upper"] = "plain"


class Response(BaseModel):
    result: str
    length: int


class Model:
    async def load(self):
        self.ready = True

    async def predict(self, request: Request) -> Response:
        text = " ".join([request.prompt] * request.times)
        if request.style == "upper":
            text = text.upper()
        return Response(result=text, length=len(text))
