"""One upstream HTTP/1.1 connection of the lean leg: requests out, responses parsed by llhttp.

Why not aiohttp's ``ClientSession`` here: measured per relayed JSON response, the generic
client (request and response objects, tracing hooks, cookie and redirect machinery, a
``StreamReader`` per body) costs about as much as everything else the relay does. This leg is
one ``asyncio.Protocol`` per connection, parsed by ``httptools`` (llhttp, the parser of Node.js,
kept by the uvloop authors), with a keep-alive pool. The server side stays aiohttp, and so does
every request this leg does not take: through an egress proxy, and WebSocket upgrades
(``relay.client`` picks the leg).

What it keeps from the client it replaces, so the relay behaves the same:

* the request as aiohttp writes it: ``Host`` first, the relayed headers in order, then
  ``Content-Length`` (``0`` for a body-less POST, PUT, PATCH or DELETE); one write per request;
* TLS with the sidecar's verifying context (``relay.tls``): certificate, host name or IP
  address, SNI; failures raised as aiohttp's ``ClientSSLError`` family so they are named the
  same way;
* the pool and the stale-connection rule of ``relay.pool``: a pooled connection that is
  closing or readable while idle is dropped before a byte is written; idle ones are closed
  after ``POOL_IDLE_S``; an attempt that reuses one marks ``CURRENT_LEG`` so a break before
  the status line can be resent under the rule;
* timeouts: ``connect`` (name resolution, TCP and TLS together) and ``read`` (no byte from
  the upstream for that long, for the head and between body reads; not counted while the
  client is slow and reading is paused);
* bodies delimited by Content-Length, chunked (trailers dropped) or the connection's close;
  ``1xx`` interim responses skipped; a body in answer to ``HEAD`` is a bad response;
* back-pressure: once ``HIGH_WATER`` bytes wait for the client, the socket is not read until
  the relay has taken them, so a slow client holds at most that plus one socket read;
* bounded heads: a status line and headers above ``MAX_HEAD_BYTES`` are a bad response.

Errors are aiohttp's exception classes, raised where aiohttp would raise them, so the retry,
resend and envelope logic (``relay.upstream``, ``relay.proxy``) serves both legs unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "HIGH_WATER",
    "MAX_HEAD_BYTES",
    "Connection",
    "ConnectionPool",
    "LeanResponse",
    "PoolKey",
]

HIGH_WATER = 64 * 1024
# aiohttp's client allows 8,190 bytes per header line and 128 headers; a head this large is
# already an upstream bug or an attack, never an API response.
MAX_HEAD_BYTES = 64 * 1024

PoolKey = tuple[str, str, int]  # scheme, host, port


class ConnectionPool(Protocol):
    """Where a connection goes back when its response is done (``LeanClient`` is one)."""

    loop: asyncio.AbstractEventLoop

    def pool(self, conn: Connection) -> None: ...
    def forget(self, conn: Connection) -> None: ...


class _BadResponse(Exception):
    """Raised inside a parser callback; llhttp stops and ``feed_data`` raises."""


class LeanResponse:
    """The upstream's answer: status, reason and headers, and its body as it arrives.

    It is also its own ``content`` (``readany``, ``read``), the two calls the relay makes on
    aiohttp's ``StreamReader``, so the relay reads both legs alike.
    """

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_size",
        "_waiter",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDictProxy[str] = _NO_HEADERS

    @property
    def content(self) -> LeanResponse:
        return self

    @property
    def body_ready(self) -> bool:
        """Body bytes (or its clean end) already arrived: the next ``readany`` returns them."""
        return bool(self._chunks) or self._done

    async def readany(self) -> bytes:
        """Every body byte received so far (waiting for some), ``b""`` at the end."""
        while True:
            chunks = self._chunks
            if chunks:
                chunk = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._size = 0
                if self._conn.paused:
                    self._conn.resume()
                return chunk
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body: all of it when it is shorter."""
        parts: list[bytes] = []
        size = 0
        while size < limit and (chunk := await self.readany()):
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)[:limit]

    def release(self) -> None:
        """The body was read to the end: the connection goes back to the pool if it may."""
        self._conn.finished(reusable=self._done and self._error is None)

    def close(self) -> None:
        """Abandon the response: the connection is closed (generation upstream stops)."""
        self._conn.finished(reusable=False)

    # ------------------------------------------------------------ fed by the connection

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER and not self._conn.paused:
            self._conn.pause()
        self._wake()

    def _end(self, error: BaseException | None = None) -> None:
        if self._done or self._error is not None:
            return
        if error is None:
            self._done = True
        else:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


class Connection(asyncio.Protocol):
    """One upstream connection: writes requests, parses responses, feeds the current one."""

    def __init__(self, client: ConnectionPool, key: PoolKey) -> None:
        self.client = client
        self.key = key
        self.loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.paused = False
        self.reusable = False
        self._response: LeanResponse | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._head: asyncio.Future[LeanResponse] | None = None
        self._head_only = False  # a HEAD request: no body may follow
        self._head_complete = False
        self._interim = False  # inside a 1xx response, which is skipped
        self._reason: list[bytes] = []
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._framed = True  # Content-Length or chunked: the close does not end the body
        self._last_read = 0.0
        self._read_timeout_s: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TLS one is not a subclass

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        self._last_read = self.loop.time()
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(aiohttp.ClientPayloadError("unexpected protocol switch"))
        except (httptools.HttpParserError, _BadResponse) as exc:
            cause = exc.__context__ if isinstance(exc.__context__, _BadResponse) else exc
            self._fail(aiohttp.ClientPayloadError(f"invalid HTTP response: {cause}"))
        else:
            head = self._head
            if head is not None and self._head_complete and not head.done():
                assert self._response is not None
                head.set_result(self._response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self._idle is not None:
            self._idle.cancel()
            self.client.forget(self)
        if self._parser is None:
            return
        head = self._head
        if head is not None and not head.done():
            # Before the status line: ``relay.upstream`` may resend on a fresh connection.
            head.set_exception(aiohttp.ServerDisconnectedError())
        elif self._response is not None:
            if self._framed:
                self._response._end(aiohttp.ClientPayloadError("Response payload is not completed"))
            else:
                self._response._end()  # a body delimited by the close ends here
        self._parser = None

    # ------------------------------------------------------------ llhttp callbacks

    def on_message_begin(self) -> None:
        if self._head_complete and not self._interim:  # a second response nobody asked for
            raise _BadResponse("bytes after the response")

    def on_status(self, reason: bytes) -> None:
        self._reason.append(reason)
        self._count(len(reason))

    def on_header(self, name: bytes, value: bytes | None) -> None:
        if self._head_complete and not self._interim:
            return  # a chunked body's trailers: dropped, as aiohttp drops them
        value = value or b""
        self._count(len(name) + len(value) + 4)
        self._headers.append(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None and self._response is not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: never relayed
            self._reason.clear()
            self._headers.clear()
            return
        self._interim = False
        self._head_complete = True
        response = self._response
        response.status = status
        response.reason = b"".join(self._reason).decode("utf-8", "surrogateescape")
        headers: CIMultiDict[str] = CIMultiDict(self._headers)
        response.headers = CIMultiDictProxy(headers)
        self._framed = (
            "Content-Length" in headers or "chunked" in headers.get("Transfer-Encoding", "").lower()
        )
        self.reusable = parser.should_keep_alive()
        if self._head_only or status in (204, 304):
            self._framed = True
            if self._head_only:
                response._end()  # llhttp would wait for the announced length

    def on_body(self, body: bytes) -> None:
        if self._head_only:
            raise _BadResponse("a body in answer to HEAD")
        assert self._response is not None
        self._response._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._stop_timer()
        if self._response is not None:
            self._response._end()

    # ------------------------------------------------------------ the client's side

    async def send(
        self, data: bytes, head_only: bool, read_timeout_s: float | None
    ) -> LeanResponse:
        """Write one request; the response once its head has arrived."""
        transport = self.transport
        assert transport is not None
        if self.closed:  # the upstream closed it before the request could be written
            raise aiohttp.ServerDisconnectedError()
        response = LeanResponse(self)
        self._response = response
        self._parser = httptools.HttpResponseParser(self)
        head: asyncio.Future[LeanResponse] = self.loop.create_future()
        self._head = head
        self._head_only = head_only
        self._head_complete = self._interim = False
        self._reason = []
        self._headers = []
        self._head_bytes = 0
        self._framed = True
        self.reusable = False
        self._last_read = self.loop.time()
        if read_timeout_s:
            self._timer = self.loop.call_at(self._last_read + read_timeout_s, self._check_read)
        self._read_timeout_s = read_timeout_s
        transport.write(data)
        try:
            return await head
        except BaseException:
            self.finished(reusable=False)  # failed, or the client left: never reused
            raise
        finally:
            self._head = None

    def finished(self, reusable: bool) -> None:
        """The relay is done with the response: pool the connection or close it."""
        if self._response is None:
            return
        self._response = None
        self._parser = None
        self._stop_timer()
        if reusable and self.reusable and not self.closed and not self.paused:
            self.client.pool(self)
        else:
            self.close()

    def pause(self) -> None:
        assert self.transport is not None
        self.paused = True
        self.transport.pause_reading()
        self._stop_timer()  # a slow client is not a silent upstream

    def resume(self) -> None:
        assert self.transport is not None
        self.paused = False
        if self.closed:
            return
        self.transport.resume_reading()
        self._last_read = self.loop.time()
        if self._read_timeout_s and self._response is not None and not self._response._done:
            self._timer = self.loop.call_at(
                self._last_read + self._read_timeout_s, self._check_read
            )

    def parked(self, idle_s: float) -> None:
        """In the pool: closed after ``idle_s`` unless taken first."""
        self._idle = self.loop.call_later(idle_s, self._expire)

    def taken(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    # ------------------------------------------------------------ internals

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _BadResponse(f"response head above {MAX_HEAD_BYTES} bytes")

    def _check_read(self) -> None:
        """The read timer: cheap to keep, since a read only stamps ``_last_read``."""
        self._timer = None
        timeout = self._read_timeout_s
        if timeout is None or self._response is None or self.paused:
            return
        due = self._last_read + timeout
        if self.loop.time() < due:
            self._timer = self.loop.call_at(due, self._check_read)
            return
        self._fail(aiohttp.SocketTimeoutError("Timeout on reading data from socket"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: Exception) -> None:
        """The exchange on this connection cannot go on: report it and close."""
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        elif self._response is not None:
            self._response._end(error)
        self._parser = None
        self.reusable = False
        self.close()

    def _expire(self) -> None:
        self._idle = None
        self.client.forget(self)
        self.close()

    def close(self) -> None:
        """Close the connection (what was written is flushed first)."""
        self._stop_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
