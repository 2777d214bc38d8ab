"""Realtime (WebSocket) sessions: after the upstream's 101, relay raw bytes both ways.

The handshake takes the path of every request (``Proxy._forward``: same ClientSession, so TLS,
SNI, connect timeout, retries and the guard apply) with its upgrade headers kept; any status
but 101 is relayed as an ordinary response. On 101 the client gets the upstream's handshake
headers and both sockets are taken over with ``transport.set_protocol``: each read is written
to the other side as it came (no re-framing or decompression; masks and extensions as the
peers negotiated), then shown to the ``RealtimeObserver``. A side whose write buffer fills
pauses reading on the other side. Not only ``set_parser`` (what ``WebSocketResponse`` uses):
once shutdown begins aiohttp's protocol drops what a client sends, and a draining session
needs both directions; ``set_parser`` still hands over what aiohttp buffered meanwhile.

Invariants: the sidecar never writes a byte of its own into a session, so a side that ends
without a close frame leaves the other without one (a WebSocket client reports 1006); the
exchange ends once, when the first side ends or after ``idle_timeout_s`` of silence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from time import monotonic
from typing import Any, cast

import aiohttp
from aiohttp import web
from aiohttp.client_proto import ResponseHandler
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict

from sidecar.exchange import Exchange, Outcome
from sidecar.observe.limits import observe_headers
from sidecar.observe.realtime import RealtimeObserver
from sidecar.relay.headers import client_reason, switching_headers, with_upgrade

CLIENT, UPSTREAM = 0, 1
# After one side ended, the other gets this long to take its last bytes (a close frame, the
# tail of a message: a round trip or two) before it is aborted: a peer that does not read
# them by then is gone, and the handler (and a guard slot) should not wait for it.
LINGER_S = 5.0


def forward_upgrade(request: web.BaseRequest, ex: Exchange, headers: CIMultiDict[str]) -> None:
    """Keep the handshake's upgrade headers; the session's model is named by ``?model=``."""
    with_upgrade(headers, request.headers)
    ex.requested_model = request.query.get("model") or None


class _Tail:
    """Takes the bytes aiohttp buffered after the handshake, as ``set_parser`` hands them on."""

    def __init__(self, feed: Callable[[bytes], None]) -> None:
        self._feed = feed

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._feed(data)
        return False, b""

    def feed_eof(self) -> None:
        return None


class _Leg(asyncio.Protocol):
    """One socket's callbacks, routed to the tunnel; aiohttp's protocol still hears the end."""

    def __init__(
        self, tunnel: Tunnel, side: int, original: asyncio.BaseProtocol, defer: bool
    ) -> None:
        self._tunnel, self._side, self._original = tunnel, side, original
        # The client's aiohttp protocol cancels the handler when told its socket closed: it
        # hears of it once the handler is done, so a session ending never cancels itself.
        self._defer = defer
        self._lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self._tunnel.received(self._side, data)

    def eof_received(self) -> bool:
        self._tunnel.ended(self._side)
        return False  # close this socket too: a session has no use for a half-closed one

    def connection_lost(self, exc: Exception | None) -> None:
        self._tunnel.lost(self._side)
        if self._defer:
            self._lost = (exc,)
        else:
            self._original.connection_lost(exc)

    def pause_writing(self) -> None:
        self._tunnel.throttle(self._side, pause=True)

    def resume_writing(self) -> None:
        self._tunnel.throttle(self._side, pause=False)

    def release(self) -> None:
        self._defer = False
        if self._lost is not None:
            asyncio.get_running_loop().call_soon(self._original.connection_lost, self._lost[0])


def _unobserved(chunk: bytes, now: float) -> None:
    return None


class Tunnel:
    """Two sockets joined: each read goes to the other side, then to the observer."""

    def __init__(
        self,
        ex: Exchange,
        observer: RealtimeObserver,
        client: asyncio.Transport | None,
        upstream: asyncio.Transport | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.ex, self.observer = ex, observer
        self.outcome: Outcome | None = None
        self.last_at = monotonic()
        self._sockets = (client, upstream)
        self._open = [client is not None, upstream is not None]
        self._observe = (observer.from_client, observer.from_upstream)
        self._ended: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self._legs: list[_Leg] = []

    def take_over(self, client: RequestHandler, upstream: ResponseHandler) -> None:
        """Install the legs, then relay what aiohttp buffered on each side meanwhile."""
        for side, original, defer in ((CLIENT, client, True), (UPSTREAM, upstream, False)):
            socket = self._sockets[side]
            if socket is not None:
                leg = _Leg(self, side, original, defer)
                self._legs.append(leg)
                socket.set_protocol(leg)
        upstream.read_timeout = None  # the session's idle timer counts both directions
        upstream.set_parser(_Tail(partial(self.received, UPSTREAM)), None)
        client.set_parser(cast(Any, _Tail(partial(self.received, CLIENT))))
        for side, socket in enumerate(self._sockets):
            if socket is None:  # it closed before the switch: that is how the session ends
                self.ended(side)
        self._check_closed()

    def received(self, side: int, data: bytes) -> None:
        if self.outcome is not None:
            return
        now = self.last_at = monotonic()
        peer = self._sockets[1 - side]
        if peer is not None:
            peer.write(data)
        try:
            self._observe[side](data, now)
        except Exception as exc:  # an observer bug stops observation, never the relay
            self.ex.observer_error = type(exc).__name__
            self.ex.parse_error = self.ex.parse_error or RealtimeObserver.kind
            self._observe = (_unobserved, _unobserved)

    def ended(self, side: int) -> None:
        """``side``'s TCP ended: that decides the outcome, and the other side follows."""
        if self.outcome is not None:
            return
        if self.observer.close_seen:
            outcome = Outcome.COMPLETED
        else:
            outcome = Outcome.UPSTREAM_ABORTED if side == UPSTREAM else Outcome.CLIENT_DISCONNECTED
        self._end(outcome)
        peer = self._sockets[1 - side]
        if peer is None:
            return
        if side == UPSTREAM or outcome is Outcome.COMPLETED:
            peer.close()  # what was relayed is flushed first; no close frame is ever added
        else:
            peer.abort()  # a client that vanished: the upstream stops (and stops billing) now

    def lost(self, side: int) -> None:
        self.ended(side)
        self._open[side] = False
        self._check_closed()

    def throttle(self, side: int, *, pause: bool) -> None:
        """``side`` cannot take more for now: stop reading the other side until it drains."""
        other = self._sockets[1 - side]
        if other is None or other.is_closing():
            return
        if pause:
            other.pause_reading()
        else:
            other.resume_reading()

    def cut(self) -> None:
        """Abort both sockets, never a clean end (shutdown ran out of time, or silence)."""
        if self.outcome is None:
            self._end(Outcome.CLIENT_DISCONNECTED)
        for side, socket in enumerate(self._sockets):
            if socket is not None and self._open[side]:
                socket.abort()

    async def run(self, idle_timeout_s: float) -> None:
        """Until the session ends, then until both sockets closed (at most ``LINGER_S``)."""
        while not self._ended.done():
            left = self.last_at + idle_timeout_s - monotonic()
            if left <= 0:
                self._end(Outcome.UPSTREAM_TIMEOUT)
                self.cut()
                break
            await asyncio.wait({self._ended}, timeout=left)
        await asyncio.wait({self._closed}, timeout=LINGER_S)
        self.cut()  # whatever still holds a socket

    def release(self) -> None:
        for leg in self._legs:
            leg.release()

    def _end(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.ex.finish(outcome, monotonic())
        if not self._ended.done():
            self._ended.set_result(None)

    def _check_closed(self) -> None:
        if not any(self._open) and not self._closed.done():
            self._closed.set_result(None)


async def relay_session(
    request: web.BaseRequest,
    ex: Exchange,
    upstream: aiohttp.ClientResponse,
    idle_timeout_s: float,
) -> web.StreamResponse:
    """Answer the client's handshake with the upstream's 101, then relay until the end."""
    ex.stream = True
    ex.status = upstream.status
    ex.response_started_at = monotonic()
    observe_headers(ex, upstream.headers, datetime.now(UTC))
    response = web.StreamResponse(status=upstream.status, reason=client_reason(upstream.reason))
    response.headers.extend(switching_headers(upstream.headers, ex.request_id))
    response.force_close()  # the connection belongs to the session now, never again to HTTP
    try:
        await response.prepare(request)
    except ConnectionError:
        ex.finish(Outcome.CLIENT_DISCONNECTED, monotonic())
        return response
    connection = upstream.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is None:  # pragma: no cover - aiohttp keeps an upgraded connection attached
        ex.finish(Outcome.UPSTREAM_ABORTED, monotonic())
        if request.transport is not None:
            request.transport.close()
        return response
    observer = RealtimeObserver(ex, upstream.headers.get("Sec-WebSocket-Extensions"))
    tunnel = Tunnel(ex, observer, request.transport, protocol.transport)
    tunnel.take_over(request.protocol, protocol)
    try:
        await tunnel.run(idle_timeout_s)
    except asyncio.CancelledError:
        tunnel.cut()
        raise
    finally:
        tunnel.release()
    return response
