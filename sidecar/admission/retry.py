"""When to retry an upstream 429/503, and how long to wait first. Pure: no I/O, no clock.

The proxy asks ``RetryPolicy.delay_before`` after each failed attempt; ``None`` means "relay
the upstream's response now". Waits use exponential backoff with full jitter (AWS architecture
blog, "Exponential Backoff And Jitter"), are never shorter than the upstream's Retry-After, and
never take the exchange past its total wait budget (contract, "Retries").
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["RetryPolicy", "is_retryable_status"]

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
