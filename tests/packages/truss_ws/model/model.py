"""A Truss websocket model: echoes text in upper case until told to stop."""

from fastapi import WebSocket


class Model:
    def __init__(self, **kwargs) -> None:
        pass

    async def websocket(self, websocket: WebSocket) -> None:
        while True:
            text = await websocket.receive_text()
            if text == "done":
                return
            if text == "raise":
                raise RuntimeError("the socket broke")
            await websocket.send_text(text.upper())
