"""Reference point, not the product: an aiohttp server relaying through a lean upstream leg.

The same shape and the same bytes as ``bench/bare_relay.py`` (aiohttp ``web.Server`` in front,
each upstream read streamed to the client as it arrives, no metrics, logging or parsing of the
payload), but the upstream leg is not aiohttp's generic ``ClientSession``: it is a small asyncio
``Protocol`` per connection with ``httptools.HttpResponseParser`` (llhttp, from the uvloop
authors) and a keep-alive pool of idle connections per upstream. The bench runs it beside the
bare relay so what the generic client costs can be told apart from what the server side and the
relay shape cost. ``python bench/lean_relay.py UPSTREAM_URL PORT``.

What the leg does: one write per request (head and body together); Content-Length, chunked
and close-delimited response bodies; every body piece parsed from one socket read is handed to
the client as one ``StreamResponse.write``; back-pressure by pausing the upstream transport
while more than ``HIGH_WATER`` bytes wait for a slow client (so at most that plus one socket
read is buffered per exchange); a connection goes back to the pool only after a complete
response that allows keep-alive, and is closed when the client leaves mid-body; a pooled
connection that the upstream closed before answering a single byte is replaced once by a fresh
one (the bench upstream never does this; it keeps the relay correct if it did).

What a product version would add, none of it exercised by the bench: TLS with certificate and
host name verification (``ssl=`` on ``create_connection`` and SNI); HTTP(S) proxies
(``CONNECT``); connect, first-byte and idle (between reads) timeouts; an idle timeout and a
size cap for the pool; retries before the first byte (connect errors, 429/5xx with
``Retry-After``); the full stale-connection rule (a reused connection that fails before the
first response byte is retried on a fresh one only when the request could not have been
processed); ``HEAD`` responses kept alive (here a ``HEAD`` answer closes its connection, since
the parser is not told that no body follows); ``1xx`` interim responses; ``Upgrade``.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop
from aiohttp import web

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from serving import serve_until_signalled

# Headers that belong to one hop (bench/bare_relay.py drops the same set; Content-Length is
# rewritten for the request and relayed as is for the response).
HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"host", b"content-length"})
HOP_RESPONSE = HOP - {b"content-length"}
# Per exchange: past this many bytes waiting for the client, the upstream socket is not read.
HIGH_WATER = 64 * 1024
# Methods that carry no body unless one is given (others get ``Content-Length: 0``).
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "DELETE", "CONNECT"})


class UpstreamClosed(ConnectionError):
    """The upstream closed or broke the connection before the response was complete."""


class StaleConnection(UpstreamClosed):
    """A reused connection was closed by the upstream before a single response byte."""


class Exchange:
    """One response being received: status and headers once complete, then body pieces.

    The protocol fills it from its callbacks; the handler awaits ``head`` and then ``read``.
    Kept separate from the connection, so the connection can go back to the pool as soon as
    the response is complete even if the client has not taken the last pieces yet.
    """

    __slots__ = (
        "buffered",
        "conn",
        "done",
        "error",
        "head",
        "head_only",
        "headers",
        "pieces",
        "reason",
        "status",
        "until_close",
        "waiter",
    )

    def __init__(self, conn: UpstreamConnection, head_only: bool) -> None:
        self.conn = conn
        self.head: asyncio.Future[None] = conn.loop.create_future()
        self.head_only = head_only
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.until_close = True  # no Content-Length and not chunked: the body ends at EOF
        self.pieces: list[bytes] = []
        self.buffered = 0  # bytes in ``pieces``: what a slow client has not taken yet
        self.waiter: asyncio.Future[None] | None = None
        self.done = False
        self.error: BaseException | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """Before the head: the handler's ``await head`` raises; after it: the next read."""
        if self.done:
            return
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # retrieved here: a handler that left must not log it
            return
        self.error = exc
        self.wake()

    async def read(self) -> bytes:
        """Everything received since the last read, joined; ``b""`` once the body is complete.

        Taking the pieces is what lets the upstream socket be read again (back-pressure).
        """
        while not self.pieces:
            if self.error is not None:
                raise self.error
            if self.done:
                return b""
            self.waiter = self.conn.loop.create_future()
            await self.waiter
        pieces = self.pieces
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self.pieces = []
        self.buffered = 0
        conn = self.conn
        if conn.paused and not self.done and not conn.closed:
            conn.paused = False
            conn.transport.resume_reading()
        return data


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to the upstream, parsed by httptools."""

    def __init__(self, pool: Pool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.transport = cast(asyncio.Transport, None)
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.paused = False
        self.reused = False
        self.answered = False  # a byte of the current response has arrived
        self.closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:  # nothing was asked: the connection cannot be trusted any more
            self.transport.close()
            return
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            ex.fail(UpstreamClosed(f"bad response from the upstream: {exc}"))
            self.exchange = None
            self.transport.close()
            return
        if self.exchange is ex and ex.pieces:
            ex.wake()
            if ex.buffered > HIGH_WATER and not self.paused:
                self.paused = True
                self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        ex, self.exchange = self.exchange, None
        if ex is None:
            return
        if ex.head.done() and ex.until_close and ex.error is None:
            ex.done = True  # a close-delimited body ends here, complete
            ex.wake()
        elif self.reused and not self.answered:
            ex.fail(StaleConnection("pooled connection closed by the upstream"))
        else:
            ex.fail(UpstreamClosed("upstream closed the connection mid-response"))

    # httptools callbacks (never raise: an exception here becomes a parser error)

    def on_status(self, status: bytes) -> None:
        if self.exchange is not None:
            self.exchange.reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.exchange
        if ex is None:
            return
        lower = name.lower()
        if lower == b"content-length" or lower == b"transfer-encoding":
            ex.until_close = False
        if lower not in HOP_RESPONSE:
            ex.headers.append(
                (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
            )

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        ex.status = self.parser.get_status_code()
        if ex.status < 200:  # an interim 1xx answer: not supported by this reference
            ex.fail(UpstreamClosed(f"interim {ex.status} response not supported"))
            self.exchange = None
            self.transport.close()
            return
        if ex.head_only:  # no body follows a HEAD answer; the parser cannot be told so
            ex.done = True
            self.exchange = None
            self.transport.close()
        ex.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.pieces.append(body)
            ex.buffered += len(body)

    def on_message_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        ex.done = True
        ex.until_close = False
        ex.wake()
        self.exchange = None
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        if self.parser.should_keep_alive() and not self.closed:
            self.pool.release(self)
        else:
            self.transport.close()

    # used by the handler

    def send(self, data: bytes, head_only: bool) -> Exchange:
        """Write one request (head and body in one write) and return its pending response."""
        ex = Exchange(self, head_only)
        self.exchange = ex
        self.answered = False
        self.transport.write(data)
        return ex

    def abandon(self) -> None:
        """The client left or the handler failed mid-response: the rest is never read."""
        self.exchange = None
        if not self.closed:
            self.transport.close()


class Pool:
    """Idle keep-alive connections per (host, port), reused most recently released first."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self.all: set[UpstreamConnection] = set()

    async def acquire(self, key: tuple[str, int]) -> UpstreamConnection:
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.transport.is_closing():
                conn.reused = True
                return conn
        _, protocol = await self.loop.create_connection(
            lambda: UpstreamConnection(self, key), key[0], key[1]
        )
        self.all.add(protocol)
        return protocol

    def release(self, conn: UpstreamConnection) -> None:
        self.idle.setdefault(conn.key, []).append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        self.all.discard(conn)
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        for conn in list(self.all):
            conn.transport.close()


def request_head(request: web.BaseRequest, host: bytes, base: bytes, body: bytes) -> bytes:
    """The request line and headers for the upstream: the client's, minus the hop headers."""
    method = request.method.encode()
    path = base + request.raw_path.encode()
    lines = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, host)]
    for name, value in request.raw_headers:
        if name.lower() not in HOP:
            lines.append(b"%s: %s\r\n" % (name, value))
    if body or request.method not in BODYLESS:
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


async def main(upstream: str, port: int) -> None:
    url = urlsplit(upstream)
    if url.scheme != "http" or url.hostname is None:
        raise SystemExit("lean_relay.py relays to plain http:// upstreams only")
    key = (url.hostname, url.port or 80)
    host = url.netloc.encode()
    base = url.path.rstrip("/").encode()
    pool = Pool(asyncio.get_running_loop())

    async def exchange(data: bytes, head_only: bool) -> Exchange:
        """Send on a pooled connection; a stale one is replaced by a fresh one, once."""
        for attempt in (1, 2):
            conn = await pool.acquire(key)
            ex = conn.send(data, head_only)
            try:
                await ex.head
            except StaleConnection:
                if attempt == 2:
                    raise
            except BaseException:  # cancelled, or the upstream broke: never reuse it
                conn.abandon()
                raise
            else:
                return ex
        raise AssertionError("unreachable")

    async def relay(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        ex = await exchange(request_head(request, host, base, body), request.method == "HEAD")
        try:
            response = web.StreamResponse(status=ex.status, reason=ex.reason, headers=ex.headers)
            await response.prepare(request)
            while chunk := await ex.read():
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            if not ex.done:  # the client left, or the upstream broke off: drop the connection
                ex.conn.abandon()

    await serve_until_signalled(web.Server(relay, access_log=None), port)
    pool.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1].rstrip("/"), int(sys.argv[2])))
