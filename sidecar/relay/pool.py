"""Pooled upstream connections: never write into one the upstream has closed; resend once.

Upstreams and load balancers close idle keep-alive connections on their own timer. When that
close crosses a request the sidecar is starting on the same connection, the request fails
although the upstream never saw it. The rule for sending it again follows Go's
``net/http`` (``persistConn.shouldRetryRequest``) and Envoy's ``reset-before-request``:

1. only a connection taken from the pool: a fresh connection that fails says something about
   the upstream, and resending on it could loop;
2. only when the connection ended (EOF or reset) before the response's status line arrived;
   timeouts, TLS failures and malformed answers are never resent;
3. only when the request is replayable: an idempotent method (RFC 9110 section 9.2.2) or an
   ``Idempotency-Key`` header. A proxy must not replay a POST the upstream may have acted on
   (billing included).

So that a POST is not lost to a connection the upstream closed while it sat in the pool, a
pooled connection is checked when the connector hands it out: a socket that is readable while
no request is outstanding has been closed, or is being closed, by the peer. It is dropped
before a byte is written and the next pooled connection, or a fresh one, is used. What remains
is a close that crosses the request in flight, the same window Go has; nothing is known to have
been left unread then, so only a replayable request is sent again. The check lives in the
connector rather than in aiohttp's request tracing, which would cost every request about 20 µs.

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
from typing import Any

import aiohttp
from multidict import CIMultiDict

POOL_IDLE_S = 4.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
IDEMPOTENCY_HEADERS = ("idempotency-key", "x-idempotency-key")
_READABLE = select.POLLIN | select.POLLPRI  # POLLHUP and POLLERR are always reported


@dataclass(slots=True)
class Leg:
    """One attempt, as far as resending is concerned: did it get a pooled connection?"""

    reused: bool = False


CURRENT_LEG: ContextVar[Leg | None] = ContextVar("sidecar_upstream_leg", default=None)


def peer_closed(protocol: Any) -> bool:
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
    return method.upper() in IDEMPOTENT_METHODS or any(h in headers for h in IDEMPOTENCY_HEADERS)


class PoolConnector(aiohttp.TCPConnector):
    """A TCP connector that never hands out a pooled connection its peer has closed, and tells
    the current attempt whether its connection came from the pool."""

    async def _get(self, key: Any, traces: list[Any]) -> Any:
        """The next open pooled connection, or None (the connector then makes a fresh one)."""
        while (connection := await super()._get(key, traces)) is not None:
            if not peer_closed(connection.protocol):
                if (leg := CURRENT_LEG.get()) is not None:
                    leg.reused = True
                return connection
            connection.close()  # closed by the peer while idle: never written to
        return None
