"""The one catch-all handler: forward, relay, feed the readers, finish the exchange.

Forward first, observe second: every upstream read is written to the client before the
next read, and only then handed to a reader. Invariant: each request creates one
``Exchange`` that ends exactly once, and the ``finally`` in ``handle`` is the only place
that records metrics and writes the log line.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from time import monotonic

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict
from yarl import URL

from sidecar.admission.guard import ConcurrencyGuard, GuardRejected
from sidecar.exchange import Exchange, Outcome
from sidecar.observe.limits import observe_headers
from sidecar.observe.readers import (
    NullReader,
    Reader,
    observation_failed,
    reader_for,
)
from sidecar.observe.request import observe_request_body
from sidecar.relay.client import UpstreamClient, UpstreamResponse
from sidecar.relay.errors import SidecarError, body_failure, error_response
from sidecar.relay.failover import Failover
from sidecar.relay.headers import (
    client_reason,
    client_response_headers,
    upstream_request_headers,
    websocket_upgrade,
)
from sidecar.relay.http1 import LeanResponse
from sidecar.relay.tunnel import forward_upgrade, relay_session
from sidecar.relay.upstream import Attempt, UpstreamFailure, send_with_retries
from sidecar.settings import Settings
from sidecar.telemetry.labels import route_of

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, bounded: it is logged


class Proxy:
    """Holds what every exchange needs; ``handle`` is registered for every path."""

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[], UpstreamClient],
        on_started: Callable[[Exchange], None],
        on_finished: Callable[[Exchange], None],
        attempt: Attempt,
        guard: ConcurrencyGuard | None = None,
        failover: Failover | None = None,
        on_upstream_headers: Callable[[Exchange, CIMultiDict[str]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.base = settings.upstream
        self._client = client_factory
        self._on_started = on_started
        self._on_finished = on_finished
        self._attempt = attempt
        self._guard = guard
        self._failover = failover
        self._on_upstream_headers = on_upstream_headers  # may rewrite them (trace context)
        # Only the exported spans use a stream's finish reasons, and finding them costs a scan.
        self._finish_reasons = settings.otlp_endpoint is not None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        received_at = monotonic()
        incoming_id = request.headers.get("x-request-id", "")
        # 128 random bits as 32 hex digits, like a UUID4's hex but a quarter of its cost.
        request_id = incoming_id if _REQUEST_ID.fullmatch(incoming_id) else os.urandom(16).hex()
        ex = Exchange(
            request_id=request_id,
            method=request.method,
            route=route_of(request.path) if request.raw_path.startswith("/") else "other",
            received_at=received_at,
            started_wall=datetime.now(UTC),
            upstream=self.settings.upstream_name,
        )
        self._on_started(ex)
        try:
            return await self._exchange(request, ex)
        except asyncio.CancelledError:
            ex.finish(Outcome.CLIENT_DISCONNECTED, monotonic())  # handler cancelled: client left
            raise
        finally:
            ex.finish(Outcome.COMPLETED, monotonic())
            self._on_finished(ex)

    async def _exchange(self, request: web.BaseRequest, ex: Exchange) -> web.StreamResponse:
        if request.method == "CONNECT" or not request.raw_path.startswith("/"):
            return self._reject(
                ex,
                SidecarError.BAD_REQUEST,
                "the sidecar forwards origin-form requests to its upstream only; "
                "it is not an open proxy",
            )
        try:
            body = await self._read_body(request)
        except RequestPayloadError as exc:  # broken framing, or slower than client_timeout_s
            return self._reject(ex, *body_failure(exc))
        if body is None:
            return self._reject(
                ex,
                SidecarError.REQUEST_TOO_LARGE,
                f"request body exceeds max_request_bytes ({self.settings.max_request_bytes})",
            )
        ex.body_read_at = monotonic()
        observe_request_body(ex, body)
        headers = upstream_request_headers(
            request.headers,
            request_id=ex.request_id,
            peer=request.remote,
            scheme=request.scheme,
            api_key=self.settings.api_key,
        )
        if self._on_upstream_headers is not None:
            self._on_upstream_headers(ex, headers)
        if websocket_upgrade(request.method, request.version, request.headers):
            forward_upgrade(request, ex, headers)
        if self._guard is None:
            return await self._forward(request, ex, body, headers)
        try:
            ex.guard_wait_s = await self._guard.acquire()
        except GuardRejected as rejected:
            ex.guard_wait_s = rejected.waited_s
            return self._reject(
                ex,
                SidecarError.LOCAL_RATE_LIMITED,
                f"the sidecar's concurrency guard ({self._guard.limit} in flight) is full",
                {"Retry-After": str(rejected.retry_after_s)},
            )
        try:
            return await self._forward(request, ex, body, headers)
        finally:
            self._guard.release()

    async def _forward(
        self, request: web.BaseRequest, ex: Exchange, body: bytes, headers: CIMultiDict[str]
    ) -> web.StreamResponse:
        retry_enabled = request.headers.get("x-sidecar-retry", "").lower() != "off"
        try:
            if self._failover is not None and self._failover.eligible(ex, request.method):
                upstream = await self._failover.send(
                    ex, request.method, request.raw_path, body, headers, retry_enabled=retry_enabled
                )
            else:
                upstream = await send_with_retries(
                    self._attempt,
                    self._client(),
                    ex,
                    request.method,
                    URL(self.base + request.raw_path, encoded=True),
                    headers,
                    body,
                    retry_enabled=retry_enabled,
                )
        except UpstreamFailure as failure:
            ex.status = failure.response.status
            ex.sidecar_error = failure.kind.value
            ex.finish(failure.outcome, monotonic())
            return failure.response
        try:
            # ``Upgrade`` is set only for a WebSocket handshake, which aiohttp's session sends
            if upstream.status == 101 and isinstance(upstream, aiohttp.ClientResponse):
                return await relay_session(request, ex, upstream, self.settings.idle_timeout_s)
            return await self._relay(request, ex, upstream)
        finally:
            if ex.outcome is Outcome.COMPLETED:
                upstream.release()  # back to the pool: the next request skips TCP and TLS setup
            else:
                upstream.close()  # abandon the connection: generation (and billing) stops

    def _reject(
        self,
        ex: Exchange,
        kind: SidecarError,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        response = error_response(kind, message, {"x-request-id": ex.request_id, **(headers or {})})
        ex.status = response.status
        ex.sidecar_error = kind.value
        ex.finish(Outcome.REJECTED, monotonic())
        return response

    async def _read_body(self, request: web.BaseRequest) -> bytes | None:
        """The whole request body, or None when it exceeds ``max_request_bytes``.

        Buffered on purpose: retries replay it byte-exact, and the model is read from it.
        """
        limit = self.settings.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            return None  # refused before "100 Continue": the client never sends the body
        expects_continue = request.headers.get("Expect", "").lower() == "100-continue"
        if expects_continue and request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _relay(
        self, request: web.BaseRequest, ex: Exchange, upstream: UpstreamResponse
    ) -> web.StreamResponse:
        ex.response_started_at = monotonic()
        ex.status = upstream.status
        observe_headers(ex, upstream.headers, datetime.now(UTC))
        content_type = upstream.headers.get("Content-Type", "")
        ex.stream = ex.stream or content_type.startswith("text/event-stream")
        reader = reader_for(
            ex,
            content_type,
            upstream.headers.get("Content-Encoding"),
            finish_reasons=self._finish_reasons,
        )
        response = web.StreamResponse(status=upstream.status, reason=client_reason(upstream.reason))
        if isinstance(upstream, LeanResponse) and upstream.body_ready:
            # The body is already here: the head leaves with its first bytes, one write instead
            # of two. A head whose body is still to come (a stream) is sent at once, as it came.
            # (aiohttp's own switch for this, set on its ``web.Response``, is not public.)
            response._send_headers_immediately = False
        response.headers.extend(client_response_headers(upstream.headers, ex.request_id))
        if ex.fallback_from is not None:
            response.headers["x-sidecar-upstream"] = ex.upstream
        try:
            await response.prepare(request)
            outcome = await self._pump(response, upstream, reader, ex)
        except ConnectionError:
            outcome = Outcome.CLIENT_DISCONNECTED
        if outcome is Outcome.COMPLETED:
            try:
                reader.close(monotonic())
            except Exception as exc:
                observation_failed(ex, reader, exc)
            try:
                await response.write_eof()
            except ConnectionError:
                outcome = Outcome.CLIENT_DISCONNECTED
        elif request.transport is not None:
            # Never turn an upstream failure into a clean end: close without the last chunk.
            request.transport.close()
        ex.finish(outcome, monotonic())
        return response

    async def _pump(
        self,
        response: web.StreamResponse,
        upstream: UpstreamResponse,
        reader: Reader,
        ex: Exchange,
    ) -> Outcome:
        """Relay until the upstream ends; the outcome says how it ended."""
        content = upstream.content
        feed = reader.feed
        while True:
            try:
                chunk = await content.readany()
            except aiohttp.ServerTimeoutError:
                return Outcome.UPSTREAM_TIMEOUT
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                return Outcome.UPSTREAM_ABORTED
            if not chunk:
                return Outcome.COMPLETED
            await response.write(chunk)
            try:
                feed(chunk, monotonic())
            except Exception as exc:  # a reader bug stops observation, never the relay
                observation_failed(ex, reader, exc)
                feed = NullReader().feed
