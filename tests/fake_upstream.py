"""A scriptable fake upstream for byte-level tests.

Each request pops the next ``Reply``: a status, headers and a script of steps (bytes to
send, ``Gate`` to wait on an ``asyncio.Event``, ``Pause`` to sleep, ``ABORT`` to cut the
connection mid-body). It records what it received, so tests can check exactly what the
sidecar forwarded.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from multidict import CIMultiDict

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass
class Gate:
    event: asyncio.Event


@dataclass
class Pause:
    seconds: float


class _Abort:
    pass


ABORT = _Abort()
Step = bytes | Gate | Pause | _Abort


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    chunked: bool = True  # False: send Content-Length (computed from the steps unless given)
    before_headers: Gate | Pause | None = None  # hold the status line back (a queued request)


@dataclass
class Received:
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes


def sse(name: str) -> Reply:
    """A fixture SSE stream, one step per event, as DeepSeek frames it."""
    events = [e + b"\n\n" for e in fixture(name).split(b"\n\n") if e]
    return Reply(headers={"Content-Type": "text/event-stream"}, steps=list(events))


def json_reply(body: bytes, status: int = 200, **headers: str) -> Reply:
    return Reply(
        status=status,
        headers={"Content-Type": "application/json", **headers},
        steps=[body],
        chunked=False,
    )


class FakeUpstream:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.received: list[Received] = []
        self.finished = asyncio.Event()
        self.disconnected = asyncio.Event()

    def push(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = CIMultiDict(request.headers)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        headers["X-Peer-Port"] = str(peer[1]) if peer else ""  # which connection carried it
        self.received.append(Received(request.method, request.path_qs, headers, body))
        reply = self.replies.popleft() if self.replies else json_reply(b'{"ok":true}')
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        if reply.chunked:
            response.enable_chunked_encoding()
        elif "Content-Length" not in reply.headers:
            response.content_length = sum(len(s) for s in reply.steps if isinstance(s, bytes))
        try:
            if isinstance(reply.before_headers, Gate):
                await reply.before_headers.event.wait()
            elif isinstance(reply.before_headers, Pause):
                await asyncio.sleep(reply.before_headers.seconds)
            await response.prepare(request)
            for step in reply.steps:
                if isinstance(step, bytes):
                    await response.write(step)
                elif isinstance(step, Gate):
                    await step.event.wait()
                elif isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                else:
                    assert request.transport is not None
                    request.transport.close()
                    return response
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        self.finished.set()
        return response
