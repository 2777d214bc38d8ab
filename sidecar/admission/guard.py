"""The opt-in concurrency guard: a FIFO admission gate in front of the upstream.

DeepSeek answers 429 once an account has too many requests in flight. Holding the excess here,
in arrival order, turns those 429s into a short local wait; a request that cannot get a slot
within ``max_wait_s`` is refused with ``GuardRejected`` so the proxy can answer a local 429.

Invariants: at most ``limit`` holders at any time; waiters are admitted strictly in arrival
order; a slot is handed directly from a releasing holder to the oldest waiter, so a newcomer can
never overtake the queue; a waiter that is cancelled or times out leaves no trace (no leaked
slot, no hole in the queue).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["ConcurrencyGuard", "GuardRejected"]


class GuardRejected(Exception):
    """No slot became free within the guard's maximum wait."""

    def __init__(self, waited_s: float, retry_after_s: int) -> None:
        super().__init__(f"no free upstream slot after {waited_s:.3f}s")
        self.waited_s = waited_s
        self.retry_after_s = retry_after_s


class ConcurrencyGuard:
    """At most ``limit`` concurrent holders; others queue FIFO for up to ``max_wait_s``."""

    def __init__(self, limit: int, max_wait_s: float) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if not max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._limit = limit
        self._max_wait_s = max_wait_s
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Retry-After is whole seconds; a client that already waited max_wait_s in vain should
        # not come back sooner than that, and never sooner than 1 s.
        self._retry_after_s = max(1, math.ceil(max_wait_s))

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        """Slots currently held."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return len(self._waiters)

    async def acquire(self) -> float:
        """Wait for a slot; returns seconds waited. Raises ``GuardRejected`` after max wait.

        The caller must call ``release()`` exactly once after a successful ``acquire()``.
        """
        if self._in_use < self._limit and not self._waiters:
            self._in_use += 1
            return 0.0
        started_at = time.monotonic()
        if self._max_wait_s <= 0:
            raise GuardRejected(0.0, self._retry_after_s)
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            async with asyncio.timeout(self._max_wait_s):
                await asyncio.shield(granted)
        except TimeoutError:
            if not self._settle_abandoned(granted):
                # The slot arrived in the same loop turn as the deadline: keep it.
                return time.monotonic() - started_at
            raise GuardRejected(time.monotonic() - started_at, self._retry_after_s) from None
        except asyncio.CancelledError:
            if not self._settle_abandoned(granted):
                self._pass_on()  # handed a slot just as we were cancelled: pass it on
            raise
        return time.monotonic() - started_at

    def release(self) -> None:
        """Give a slot back: to the oldest waiter if any, else to the pool."""
        self._pass_on()

    async def start(self) -> None:
        """Open what the guard needs; the local guard needs nothing (the shared one does)."""

    async def close(self) -> None:
        """Close what ``start`` opened, after the last exchange has released its slot."""

    def _pass_on(self) -> None:
        """Hand the slot on; apart from ``release`` so that a subclass's override is not re-run."""
        if self._in_use <= 0:
            raise RuntimeError("release() without a matching acquire()")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands; in_use is unchanged
                return
        self._in_use -= 1

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[float]:
        """``async with guard.admit() as waited_s:`` holds a slot for the block."""
        waited_s = await self.acquire()
        try:
            yield waited_s
        finally:
            self.release()

    def _settle_abandoned(self, granted: asyncio.Future[None]) -> bool:
        """Forget a waiter that gives up; False if it had already been handed a slot."""
        if granted.done():
            return False
        granted.cancel()
        self._waiters.remove(granted)
        return True
