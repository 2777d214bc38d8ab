"""When to retry an upstream 429/503, and how long to wait first. Pure: no I/O, no clock.

The proxy asks ``RetryPolicy.delay_before`` after each failed attempt; ``None`` means "relay
the upstream's response now". Waits use exponential backoff with full jitter (AWS architecture
blog, "Exponential Backoff And Jitter"), are never shorter than the upstream's Retry-After, and
never take the exchange past its total wait budget (contract, "Retries").
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["RetryPolicy", "is_retryable_status", "parse_retry_after"]

# 429: rate or concurrency limit; 503: server overloaded (DeepSeek error codes). Other 5xx may
# have done work upstream, and 4xx will fail the same way again.
_RETRYABLE = frozenset({429, 503})


def is_retryable_status(status: int) -> bool:
    """True for the statuses that say "try again later" without the request having run."""
    return status in _RETRYABLE


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` counts the first try (1 = never retry); ``max_wait_s`` bounds all waits."""

    max_attempts: int
    max_wait_s: float
    base_s: float = 0.5
    cap_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        for name in ("max_wait_s", "base_s", "cap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    def delay_before(
        self,
        attempt: int,
        retry_after_s: float | None,
        waited_s: float,
        rng: random.Random,
    ) -> float | None:
        """Seconds to wait before the attempt after ``attempt`` (1-based) failed; None = give up.

        The jittered backoff is drawn from ``[0, min(cap, base * 2**(attempt - 1), budget left)]``
        so an unlucky draw never gives up on its own; only a Retry-After longer than what is left
        of the budget (or attempts running out) does.
        """
        if attempt >= self.max_attempts:
            return None
        left_s = self.max_wait_s - waited_s
        if left_s <= 0:
            return None
        floor_s = max(retry_after_s or 0.0, 0.0)
        if floor_s > left_s:
            return None
        # min() before the power would overflow float for very large attempt numbers.
        exponent = min(attempt - 1, 64)
        ceiling_s = min(self.cap_s, self.base_s * 2.0**exponent, left_s)
        return max(rng.uniform(0.0, ceiling_s), floor_s)


def parse_retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds the upstream asks us to wait, or None if it did not say (or said nonsense).

    Reads ``retry-after-ms`` (float milliseconds, an OpenAI extension) first, then
    ``retry-after`` as delta-seconds (floats tolerated) or an HTTP-date relative to ``now``
    (RFC 9110 §10.2.3). Past dates and negative values mean "now" (0).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    millis = _finite(lowered.get("retry-after-ms"))
    if millis is not None:
        return max(millis / 1000.0, 0.0)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _finite(raw)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" zone: RFC 5322 says UTC with unknown origin
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def _finite(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None
