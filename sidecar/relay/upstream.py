"""Sending a request to the upstream: one attempt, or several when retries are opted in.

Retries happen only before anything was sent to the client, on 429, 503 and connect
errors, and never wait past the retry budget: when Retry-After exceeds what is left, the
upstream's own response is relayed at once. Every attempt is stamped on the exchange so
``llm_upstream_attempts_total`` counts it whether or not retries are on.

One resend is always on, outside the retry budget: a request that failed on a pooled
connection the upstream had already closed goes out again (rules in ``relay.pool``), until it
goes out on a fresh connection; each failed pooled connection is discarded, so this ends within
the pool's size, almost always after one. It shows as an attempt with code ``error`` followed
by the real one. TLS failures are never retried: a certificate
does not fix itself within a request.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import monotonic
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from sidecar.admission.retry import RetryPolicy, is_retryable_status
from sidecar.exchange import Exchange, Outcome
from sidecar.observe.limits import observe_headers
from sidecar.observe.readers import CONCURRENCY_429
from sidecar.relay.client import UpstreamClient, UpstreamResponse
from sidecar.relay.descriptors import EXHAUSTED_MESSAGE, is_exhaustion
from sidecar.relay.egress import Egress
from sidecar.relay.errors import SidecarError, error_response
from sidecar.relay.pool import CURRENT_LEG, Leg, resend_allowed
from sidecar.relay.proxy_env import where
from sidecar.relay.tls import failure_cause, failure_message

_ERROR_BODY_CAP = 64 << 10  # a 429/503 envelope is a few hundred bytes


class UpstreamFailure(Exception):
    """No upstream response to relay; ``response`` is the sidecar's own envelope."""

    def __init__(self, kind: SidecarError, outcome: Outcome, message: str, request_id: str):
        super().__init__(message)
        self.kind = kind
        self.outcome = outcome
        self.response = error_response(kind, message, {"x-request-id": request_id})


@dataclass
class Attempt:
    """How attempts are made: the retry policy (max_attempts 1 = no retries) and a jitter source."""

    policy: RetryPolicy
    rng: random.Random = field(default_factory=random.Random)
    log: Any = None  # a structlog logger: one debug line per retry (no headers, no bodies)
    on_fd_exhausted: Callable[[str], None] | None = None  # a connect failed for lack of fds
    egress: Egress | None = None  # proxy choice per URL; None: direct (tests, tools)

    def proxy_for(self, url: URL) -> URL | None:
        return self.egress.proxy_for(url) if self.egress is not None else None

    def retrying(self, ex: Exchange, delay_s: float) -> None:
        if self.log is not None:
            self.log.debug(
                "upstream_retry",
                request_id=ex.request_id,
                attempt=ex.attempts,
                code=ex.attempt_codes[-1],
                wait_s=round(delay_s, 3),
            )

    def resending(self, ex: Exchange) -> None:
        if self.log is not None:
            self.log.debug("upstream_resend", request_id=ex.request_id, attempt=ex.attempts)

    def tls_failed(self, ex: Exchange, host: str, cause: str) -> None:
        if self.log is not None:
            self.log.warning("upstream_tls_error", request_id=ex.request_id, host=host, cause=cause)


async def _read_error_body(ex: Exchange, response: UpstreamResponse) -> None:
    """Observe a retried 429's body (DeepSeek's concurrency limit) before discarding it."""
    try:
        body = await response.content.read(_ERROR_BODY_CAP)
    except (TimeoutError, aiohttp.ClientError):
        return
    match = CONCURRENCY_429.search(body)
    if match:
        ex.limits.reported_concurrency_limit = int(match.group(2))


async def send_with_retries(
    attempt: Attempt,
    client: UpstreamClient,
    ex: Exchange,
    method: str,
    url: URL,
    headers: CIMultiDict[str],
    body: bytes,
    *,
    retry_enabled: bool,
) -> UpstreamResponse:
    """Return the upstream response to relay, or raise ``UpstreamFailure``."""
    waited_s = 0.0
    resends = 0  # stale-connection resends: outside the retry policy's attempt count
    proxy = attempt.proxy_for(url)
    while True:
        ex.attempts += 1
        if ex.sent_at is None:
            ex.sent_at = monotonic()
        leg = Leg()
        token = CURRENT_LEG.set(leg)
        try:
            response = await client.request(method, url, headers, body, proxy)
        except aiohttp.ConnectionTimeoutError:
            failure = _failed(ex, _UNREACHABLE, "timed out connecting to the " + _hop(proxy))
        except aiohttp.ServerTimeoutError:
            raise _failed(
                ex, _TIMEOUT, "the upstream sent no response within idle_timeout"
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise _tls_failed(attempt, ex, exc, url) from None
        except aiohttp.ClientHttpProxyError as exc:
            message = f"the {_proxy_name(proxy)} refused the tunnel ({exc.status})"
            failure = _failed(ex, _UNREACHABLE, message)
        except (aiohttp.ClientConnectionError, OSError) as exc:
            if _stale(exc) and resend_allowed(leg, method, headers):  # bounded: pool size
                resends += 1
                ex.attempt_codes.append("error")
                attempt.resending(ex)
                continue
            message = "cannot connect to the " + _hop(proxy)
            if is_exhaustion(exc):
                message = f"{message}: {EXHAUSTED_MESSAGE}"
                if attempt.on_fd_exhausted is not None:
                    attempt.on_fd_exhausted("connect")
            failure = _failed(ex, _UNREACHABLE, message)
        except aiohttp.ClientError:
            raise _failed(ex, _BAD_RESPONSE, "the upstream sent an invalid HTTP response") from None
        else:
            ex.attempt_codes.append(str(response.status))
            if not (retry_enabled and is_retryable_status(response.status)):
                return response
            observe_headers(ex, response.headers, datetime.now(UTC))
            delay = attempt.policy.delay_before(
                ex.attempts - resends, ex.limits.retry_after_s, waited_s, attempt.rng
            )
            if delay is None:
                return response
            await _read_error_body(ex, response)
            response.close()
            attempt.retrying(ex, delay)
            waited_s += delay
            await asyncio.sleep(delay)
            continue
        finally:
            CURRENT_LEG.reset(token)
        delay = (
            attempt.policy.delay_before(ex.attempts - resends, None, waited_s, attempt.rng)
            if retry_enabled
            else None
        )
        if delay is None:
            raise failure
        attempt.retrying(ex, delay)
        waited_s += delay
        await asyncio.sleep(delay)


def _hop(proxy: URL | None) -> str:
    """What could not be reached: the upstream, or the egress proxy (named, no credentials)."""
    return "upstream" if proxy is None else f"upstream through the {_proxy_name(proxy)}"


def _proxy_name(proxy: URL | None) -> str:
    return "egress proxy" if proxy is None else f"egress proxy {where(proxy)}"


def _stale(exc: BaseException) -> bool:
    """The connection ended under the request (rule 2 of ``relay.pool``), not a connect error."""
    return not isinstance(exc, aiohttp.ClientConnectorError) and isinstance(
        exc, aiohttp.ClientConnectionError | ConnectionError
    )


def _tls_failed(
    attempt: Attempt, ex: Exchange, exc: aiohttp.ClientSSLError, url: URL
) -> UpstreamFailure:
    host = url.raw_host or ""
    cause = failure_cause(exc)
    attempt.tls_failed(ex, host, cause)
    return _failed(ex, _TLS, failure_message(exc, cause, host))


_UNREACHABLE = (SidecarError.UPSTREAM_UNREACHABLE, Outcome.UPSTREAM_UNREACHABLE)
_TIMEOUT = (SidecarError.UPSTREAM_TIMEOUT, Outcome.UPSTREAM_TIMEOUT)
_BAD_RESPONSE = (SidecarError.UPSTREAM_BAD_RESPONSE, Outcome.UPSTREAM_UNREACHABLE)
_TLS = (SidecarError.UPSTREAM_TLS_ERROR, Outcome.UPSTREAM_UNREACHABLE)


def _failed(ex: Exchange, why: tuple[SidecarError, Outcome], message: str) -> UpstreamFailure:
    """An attempt that got no HTTP response: counted with code ``error``."""
    ex.attempt_codes.append("error")
    return UpstreamFailure(why[0], why[1], message, ex.request_id)
