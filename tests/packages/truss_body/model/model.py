"""A Truss model whose predict takes only the request: it reads the body itself."""

import hashlib

from starlette.requests import Request


class Model:
    async def predict(self, request: Request) -> dict:
        body = await request.body()
        return {
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "content_type": request.headers.get("content-type"),
            "disconnected": await request.is_disconnected(),
        }
