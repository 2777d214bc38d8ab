"""Cluster capacity: a FIFO of service slots, so requests beyond it wait (and get keep-alives).

Unlike ``asyncio.Semaphore`` a waiter can time out, send a keep-alive, and keep its place in the
line; a slot freed while a waiter is gone is handed to the next one, so slots are never lost.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Capacity:
    """``size`` slots; ``wait_turn`` returns a ticket to poll, ``release`` frees a slot."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_service = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return sum(1 for fut in self._waiters if not fut.done())

    def try_acquire(self) -> asyncio.Future[None] | None:
        """Take a slot now (None) or join the line (a future resolved when a slot is ours)."""
        if self.in_service < self.size and not self._waiters:
            self.in_service += 1
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    def abandon(self, fut: asyncio.Future[None]) -> None:
        """A waiter leaves the line; if a slot was already handed to it, pass the slot on."""
        if fut.done() and not fut.cancelled():
            self.release()
        else:
            fut.cancel()

    def release(self) -> None:
        """Hand the slot to the oldest live waiter, or return it to the pool."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.in_service -= 1
