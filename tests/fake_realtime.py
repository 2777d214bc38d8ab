"""A scriptable realtime upstream: aiohttp's WebSocketResponse speaking Realtime events.

Each session runs ``script(ws, fake)``; the default answers ``response.create`` with deltas and
a ``response.done`` carrying ``USAGE`` and echoes everything else. It records the handshake
headers, every message received and how the session closed, so tests can check what the
sidecar forwarded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

USAGE = {
    "total_tokens": 130,
    "input_tokens": 100,
    "output_tokens": 30,
    "input_token_details": {"text_tokens": 100, "audio_tokens": 0, "cached_tokens": 64},
    "output_token_details": {"text_tokens": 30, "audio_tokens": 0},
}
SESSION_CREATED = orjson.dumps(
    {
        "type": "session.created",
        "event_id": "event_1",
        "session": {"type": "realtime", "object": "realtime.session", "model": "gpt-realtime"},
    }
).decode()


def event(kind: str, **fields: object) -> str:
    return orjson.dumps({"type": kind, "event_id": "event_x", **fields}).decode()


RESPONSE = [
    event("response.created", response={"id": "resp_1", "status": "in_progress"}),
    event("response.output_text.delta", response_id="resp_1", item_id="i", delta="Hel"),
    event("response.output_text.delta", response_id="resp_1", item_id="i", delta="lo"),
    event("response.done", response={"id": "resp_1", "status": "completed", "usage": USAGE}),
]

Script = Callable[[web.WebSocketResponse, "FakeRealtime"], Awaitable[None]]


async def answer(ws: web.WebSocketResponse, fake: FakeRealtime) -> None:
    """session.created, then a response per response.create; other messages echoed."""
    await ws.send_str(SESSION_CREATED)
    while True:
        message = await ws.receive()
        fake.messages.append((message.type, message.data, message.extra))
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
            return
        if message.type == WSMsgType.TEXT and '"response.create"' in message.data:
            for text in RESPONSE:
                await ws.send_str(text)
        elif message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)


@dataclass
class FakeRealtime:
    script: Script = answer
    compress: bool = False
    reject: web.Response | None = None  # answer the handshake with this instead of a 101
    headers: list[CIMultiDict[str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    messages: list[tuple[WSMsgType, object, object]] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(CIMultiDict(request.headers))
        self.paths.append(request.path_qs)
        if self.reject is not None:
            return self.reject
        ws = web.WebSocketResponse(compress=self.compress, protocols=("realtime",))
        await ws.prepare(request)
        self.started.set()
        try:
            await self.script(ws, self)
        finally:
            self.close_codes.append(ws.close_code)
            self.ended.set()
        return ws
