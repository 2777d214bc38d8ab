"""Pooled upstream connections: never write into one the upstream has closed; resend once.

Upstreams and load balancers close idle keep-alive connections on their own timer. When that
close crosses a request the sidecar is starting on the same connection, the request fails
although the upstream never saw it. The rule for sending it again follows Go's
``net/http`` (``persistConn.shouldRetryRequest``) and Envoy's ``reset-before-request``:

1. only a connection taken from the pool: a fresh connection that fails says something about
   the upstream, and resending on it could loop;
2. only when the connection ended (EOF or reset) before the response's status line arrived;
   timeouts, TLS failures and malformed answers are never resent;
3. only when nothing of the request was written, or the request is replayable: an idempotent
   method (RFC 9110 section 9.2.2) or an ``Idempotency-Key`` header. A proxy must not replay
   a POST the upstream may have acted on (billing included).

To make 3 hold for POSTs too, a pooled connection is checked in the instant before its first
byte is written (from aiohttp's request trace callbacks, which run synchronously just ahead of
each write): a socket that is readable while no request is outstanding has been closed, or is
being closed, by the peer. It is aborted, nothing is written, and the request is resent on a
fresh connection. Only the race inside one write system call remains, the same window Go has.

Like Go, the resend repeats while the failing connection came from the pool (another idle one
may be just as stale); each failed one is discarded, so a fresh connection ends it.

Connections idle longer than ``POOL_IDLE_S`` are dropped by the sidecar before an upstream
would drop them: 4 s is below the shortest common keep-alive timeouts (5 s for Node.js,
uvicorn and Apache httpd; 60 s and more for load balancers and nginx).
"""

from __future__ import annotations

import select
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
from multidict import CIMultiDict

POOL_IDLE_S = 4.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
IDEMPOTENCY_HEADERS = ("idempotency-key", "x-idempotency-key")
_READABLE = select.POLLIN | select.POLLPRI  # POLLHUP and POLLERR are always reported


@dataclass(slots=True)
class Leg:
    """One attempt's connection, as far as resending is concerned."""

    reused: bool = False
    protocol: Any = None  # aiohttp's ResponseHandler of the connection in use
    written: bool = False  # the first byte of the request went to the socket
    unsent: bool = False  # the pooled connection was found closed: nothing was written

    def before_write(self, first_body_chunk: bool) -> None:
        """Called just ahead of a write: abort a pooled connection the peer has closed."""
        if not self.reused or self.written or self.unsent:
            return
        if _peer_closed(self.protocol):
            self.unsent = True
            transport = getattr(self.protocol, "transport", None)
            if transport is not None:
                transport.abort()  # the write that follows fails before sending anything
        elif first_body_chunk:
            self.written = True


CURRENT_LEG: ContextVar[Leg | None] = ContextVar("sidecar_upstream_leg", default=None)


def _peer_closed(protocol: Any) -> bool:
    """True when the connection cannot carry a request: closed, or readable while idle."""
    transport = getattr(protocol, "transport", None)
    if transport is None or transport.is_closing():
        return True
    sock = transport.get_extra_info("socket")
    if sock is None:  # no socket to look at: trust the transport
        return False
    poller = select.poll()
    poller.register(sock.fileno(), _READABLE)
    return bool(poller.poll(0))


def resend_allowed(leg: Leg, method: str, headers: CIMultiDict[str]) -> bool:
    """Rules 1 and 3 above; the caller has checked rule 2 (how the attempt failed)."""
    if not leg.reused:
        return False
    if leg.unsent:
        return True
    return method.upper() in IDEMPOTENT_METHODS or any(h in headers for h in IDEMPOTENCY_HEADERS)


class PoolConnector(aiohttp.TCPConnector):
    """A TCP connector that tells the current attempt which connection it got."""

    async def connect(
        self, req: aiohttp.ClientRequest, traces: list[Any], timeout: aiohttp.ClientTimeout
    ) -> Any:
        connection = await super().connect(req, traces, timeout)
        leg = CURRENT_LEG.get()
        if leg is not None:
            leg.protocol = connection.protocol
        return connection


async def _reused(session: Any, context: SimpleNamespace, params: Any) -> None:
    if (leg := CURRENT_LEG.get()) is not None:
        leg.reused = True


async def _created(session: Any, context: SimpleNamespace, params: Any) -> None:
    if (leg := CURRENT_LEG.get()) is not None:
        leg.reused = False


async def _headers_sent(session: Any, context: SimpleNamespace, params: Any) -> None:
    """Runs right before the headers are written when there is no body (else buffered)."""
    if (leg := CURRENT_LEG.get()) is not None:
        leg.before_write(first_body_chunk=False)


async def _chunk_sent(session: Any, context: SimpleNamespace, params: Any) -> None:
    """Runs right before a body chunk (with the buffered headers) is written."""
    if (leg := CURRENT_LEG.get()) is not None:
        leg.before_write(first_body_chunk=True)


def pool_trace() -> aiohttp.TraceConfig:
    """The trace hooks that feed ``Leg``; they never suspend, so no write can slip between."""
    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(_reused)
    trace.on_connection_create_start.append(_created)
    trace.on_request_headers_sent.append(_headers_sent)
    trace.on_request_chunk_sent.append(_chunk_sent)
    return trace
