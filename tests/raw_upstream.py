"""A scriptable raw-socket upstream: it writes exactly the bytes a test gives it.

aiohttp's server cannot produce a broken response (a short body, a bad chunk, a status line
that is not HTTP), so this upstream speaks TCP: each request pops the next reply, a list of
steps (bytes to write, ``Gate`` to wait on an event, ``Pause`` to sleep, ``CLOSE`` to end the
connection, ``RESET`` to abort it). It records each request as it arrived, head and body, so a
test can check exactly what the sidecar forwarded, and counts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Gate:
    event: asyncio.Event


@dataclass
class Pause:
    seconds: float


class _End:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CLOSE = _End("CLOSE")  # FIN after the steps so far: a close-delimited body ends here
RESET = _End("RESET")  # RST: the connection breaks
Step = bytes | Gate | Pause | _End
DEFAULT_REPLY: list[Step] = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"]


def response(
    status: int = 200,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    reason: str = "OK",
    chunked: bool = False,
) -> bytes:
    """A well-formed HTTP/1.1 response; ``Content-Length`` added unless ``chunked``."""
    lines = [f"HTTP/1.1 {status} {reason}".encode()]
    lines += [f"{name}: {value}".encode() for name, value in headers or []]
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
        payload = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(b"Content-Length: %d" % len(body))
        payload = body
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


@dataclass
class Request:
    head: bytes
    body: bytes

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


@dataclass
class RawUpstream:
    replies: deque[list[Step]] = field(default_factory=deque)
    received: list[Request] = field(default_factory=list)
    connections: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def push(self, *replies: list[Step]) -> None:
        self.replies.extend(replies)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()  # after what was written is flushed (RESET already aborted)
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is over."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        request = Request(head, await _read_body(reader, head))
        self.received.append(request)
        self.arrived.set()
        steps = self.replies.popleft() if self.replies else DEFAULT_REPLY
        for step in steps:
            if isinstance(step, bytes):
                writer.write(step)
                await writer.drain()
            elif isinstance(step, Gate):
                await step.event.wait()
            elif isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
            elif step is CLOSE:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                await writer.drain()
                return False
            else:  # RESET: SO_LINGER 0 turns close() into an RST
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return False
        return True


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """The body after ``head``: by Content-Length, or chunked (the sidecar sends the former)."""
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        fields[key.strip().lower()] = value.strip()
    if b"content-length" in fields:
        return await reader.readexactly(int(fields[b"content-length"]))
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # no trailers from the sidecar
        return b"".join(parts)
    return b""


@dataclass
class Answer:
    """A response as a raw client read it: ``complete`` is False when it broke off."""

    status: int
    head: bytes
    body: bytes
    complete: bool

    def header(self, name: str) -> str | None:
        return Request(self.head, b"").header(name)

    def headers(self, name: str) -> list[str]:
        lines = self.head.split(b"\r\n")[1:]
        key = name.lower().encode()
        return [
            line.partition(b":")[2].strip().decode("latin-1")
            for line in lines
            if line.partition(b":")[0].strip().lower() == key
        ]


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """Read one response: by Content-Length, chunked, or until the connection closes."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = Request(head, b"").header("content-length")
    if 100 <= status < 200 or status in (204, 304):
        return Answer(status, head, b"", True)
    try:
        if length is not None:
            return Answer(status, head, await reader.readexactly(int(length)), True)
        if (Request(head, b"").header("transfer-encoding") or "").lower() == "chunked":
            return await _read_chunked(reader, status, head)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        partial = getattr(exc, "partial", b"")
        return Answer(status, head, partial, False)
    return Answer(status, head, await reader.read(), True)  # close-delimited


async def _read_chunked(reader: asyncio.StreamReader, status: int, head: bytes) -> Answer:
    parts: list[bytes] = []
    try:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        return Answer(status, head, b"".join(parts), False)
    return Answer(status, head, b"".join(parts), True)


@contextlib.asynccontextmanager
async def raw_exchange(
    url: str,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw client connection to ``url`` (``http://host:port``), closed on exit."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def running_upstream() -> AsyncIterator[tuple[RawUpstream, str]]:
    upstream = RawUpstream()
    url = await upstream.start()
    try:
        yield upstream, url
    finally:
        await upstream.close()
