"""A fast HTTP/1.1 upstream for the bench: raw asyncio protocol on uvloop, one process.

Run as ``python bench/upstream.py``; it prints ``PORT <n>`` once listening. A request whose
body says ``"stream": true`` gets an SSE stream (``x-bench-chunks`` events, each written as
its own HTTP chunk, ``x-bench-interval-ms`` apart, 0 = back to back with only a yield to
the loop between writes); any other request gets the ~600-byte JSON completion at once.
Request bodies must carry Content-Length (the sidecar and nginx both send one).

Requests with an ``x-bench-status`` header are the scrape bench's label filler: the reply has
that status and reports the requested model (``x-bench-fault`` makes it abort, stall, answer
garbage, or pace its events so the client can leave mid-stream).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import cast

import orjson
import uvloop

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from payloads import (
    CHUNKS_HEADER,
    ECHO_FAULT_HEADER,
    ECHO_STATUS_HEADER,
    INTERVAL_HEADER,
    echo_reply,
    json_body,
    sse_events,
)

JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-ds-trace-id: bench\r\n"
    b"Content-Length: %d\r\n\r\n" % len(json_body())
)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\nx-ds-trace-id: bench\r\nTransfer-Encoding: chunked\r\n\r\n"
)
# Longer than the idle timeout the scrape bench gives the sidecar (--idle-timeout 1).
STALL_S = 3.0
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Upstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.resume: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)

    def pause_writing(self) -> None:
        self.resume = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)
        self.resume = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        """Answer every complete request in the buffer, in order (streams one at a time)."""
        while self.transport is not None and not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", ""):
                self.transport.write(BAD)
                self.transport.close()
                return
            length = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            if ECHO_STATUS_HEADER in headers:
                self.busy = True
                asyncio.get_running_loop().create_task(self.echo(headers, body))
            elif b'"stream":true' in body.replace(b" ", b""):
                chunks = int(headers.get(CHUNKS_HEADER, "100"))
                interval = float(headers.get(INTERVAL_HEADER, "0")) / 1000.0
                self.busy = True
                asyncio.get_running_loop().create_task(self.stream(chunks, interval))
            else:
                self.transport.write(JSON_HEAD + json_body())

    async def stream(self, chunks: int, interval: float) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(SSE_HEAD)
        for event in sse_events(chunks):
            if self.transport is None:
                return
            transport.write(b"%x\r\n%s\r\n" % (len(event), event))
            if self.resume is not None:
                await self.resume
            await asyncio.sleep(interval)
        if self.transport is None:
            return
        transport.write(b"0\r\n\r\n")
        self.busy = False
        self.process()

    async def echo(self, headers: dict[str, str], body: bytes) -> None:
        """The scrape bench's label filler: echo the requested model and status, or a fault."""
        transport = self.transport
        if transport is None:
            return
        request = orjson.loads(body) if body else {}
        model = request.get("model") or ""
        stream = request.get("stream") is True
        head, pieces = echo_reply(int(headers[ECHO_STATUS_HEADER]), model, stream)
        fault = headers.get(ECHO_FAULT_HEADER, "")
        if fault == "garbage":  # not HTTP: the sidecar answers 502 upstream_unreachable
            transport.write(b"garbage\r\n\r\n")
            transport.close()
            return
        if len(pieces) == 1:  # a JSON body: two writes, so a fault can strike between them
            pieces = [pieces[0][: len(pieces[0]) // 2], pieces[0][len(pieces[0]) // 2 :]]
        transport.write(head + pieces[0])
        for piece in pieces[1:]:
            if fault == "abort":  # the connection drops mid-body
                transport.abort()
                return
            if fault == "stall":  # silence past the sidecar's idle timeout
                await asyncio.sleep(STALL_S)
            elif fault == "slow":  # time for the client to leave mid-stream
                await asyncio.sleep(0.05)
            if self.transport is None:
                return
            transport.write(piece)
        self.busy = False
        self.process()


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    uvloop.run(main())
