"""The concurrency guard shared through Redis: N exchanges in flight across every sidecar.

Built on the local guard. A request first passes this pod's FIFO (``ConcurrencyGuard`` with
the same N); then the pod's oldest admitted request, and only it, asks Redis for a cluster
slot. So arrival order within a pod is kept, each pod holds one place in the cluster queue,
and that queue is served in ticket order: no pod starves. Slots are leases that one background
task renews; a pod that dies stops renewing and its slots expire within ``lease_s``.

Redis never holds the relay up for long: each call is bounded by ``REDIS_TIMEOUT_S``. After a
failure the guard is the local guard alone (same N) and the request path stops calling Redis;
a background probe finds Redis again, re-registers every slot this pod holds (so the cluster
count is true again, even after a restart that lost it) and the shared budget resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from typing import Any, Protocol

from sidecar.admission.guard import ConcurrencyGuard, GuardRejected
from sidecar.admission.redis_budget import BackendError, RedisBudget, connect

__all__ = ["GuardReport", "SharedGuard"]

# A healthy Redis answers a script in well under a millisecond; 250 ms means it is sick, and
# is the most one request ever waits on it before the local guard takes over.
REDIS_TIMEOUT_S = 0.25
# A waiting pod asks again at least this often: release messages are best effort.
POLL_S = 0.5
# Four missed polls: the waiting pod is gone, and so is its place in the cluster queue.
WAITER_TTL_S = 2.0
# While Redis is away, one probe a second finds it again without loading it when it returns.
PROBE_S = 1.0
# Renew at a third of the lease (two renewals may fail before a live slot expires), and at
# least this often so the cluster gauge stays fresh.
MAX_RENEW_S = 5.0


class GuardReport(Protocol):
    """Where the shared guard reports its backend and counts (``Metrics`` is one)."""

    def guard_backend(self, up: bool) -> None: ...
    def guard_backend_error(self) -> None: ...
    def guard_in_flight(self, scope: str, count: int) -> None: ...


class SharedGuard(ConcurrencyGuard):
    """``limit`` in flight across every sidecar drawing on ``key`` in the Redis at ``url``."""

    def __init__(
        self,
        url: str,
        key: str,
        limit: int,
        max_wait_s: float,
        lease_s: float,
        report: GuardReport,
        log: Any,
        timeout_s: float = REDIS_TIMEOUT_S,
    ) -> None:
        super().__init__(limit, max_wait_s)
        self._client = connect(url, timeout_s)
        self._budget = RedisBudget(self._client, key, limit, lease_s, WAITER_TTL_S, timeout_s)
        self._renew_s = min(lease_s / 3, MAX_RENEW_S)
        self._report = report
        self._log = log
        self._pod = os.urandom(6).hex()  # tokens of different pods never collide
        self._serial = itertools.count()
        self._held: set[str] = set()  # one token per exchange holding a slot, leased or not
        self._orphans: set[str] = set()  # released while Redis was away: returned on recovery
        self._up: bool | None = None  # None until the first answer (or failure)
        self._head = asyncio.Lock()  # FIFO: only this pod's oldest admitted request asks Redis
        self._wake = asyncio.Event()  # a slot may have come free: the head asks again
        self._fell = asyncio.Event()  # Redis just failed: the renewer starts probing now
        self._returns: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []

    @property
    def backend_up(self) -> bool:
        return bool(self._up)

    async def start(self) -> None:
        """First contact (bounded), then the renewer and the release listener."""
        self._report.guard_in_flight("local", 0)
        await self._maintain()
        self._background = [
            asyncio.create_task(self._renewing()),
            asyncio.create_task(self._budget.listen(self._wake.set, PROBE_S)),
        ]

    async def close(self) -> None:
        """Stop the background tasks and hand back whatever this pod still holds."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, *self._returns, return_exceptions=True)
        leftovers = [*self._held, *self._orphans]
        if leftovers and self._up:
            with contextlib.suppress(BackendError):
                await self._budget.release(leftovers)
        await self._client.aclose()

    async def acquire(self) -> float:
        """This pod's FIFO, then a cluster slot; seconds waited in all, or ``GuardRejected``."""
        started_at = time.monotonic()
        await super().acquire()
        token = f"{self._pod}:{next(self._serial)}"
        try:
            await self._lease(token, started_at)
        except BaseException:
            self._give_back([token])  # it may hold a queue place, or a slot granted as we left
            self._pass_on()
            raise
        self._held.add(token)
        self._report.guard_in_flight("local", len(self._held))
        return time.monotonic() - started_at

    def release(self) -> None:
        """Give a slot back at once locally; Redis hears of it from a background task."""
        if not self._held:
            raise RuntimeError("release() without a matching acquire()")
        token = self._held.pop()  # any of this pod's tokens: its slots are interchangeable
        self._report.guard_in_flight("local", len(self._held))
        self._give_back([token])
        self._pass_on()

    async def _lease(self, token: str, started_at: float) -> None:
        """Wait for a cluster slot in this pod's turn; returns at once while Redis is away."""
        if not self._up:
            return
        deadline = started_at + self._max_wait_s
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await self._head.acquire()
        except TimeoutError:
            raise self._rejected(started_at) from None
        try:
            while self._up:
                self._wake.clear()  # a release during the call below still wakes us
                try:
                    granted, held = await self._budget.acquire(token)
                except BackendError as exc:
                    self._failed(exc)
                    return
                self._report.guard_in_flight("cluster", held)
                left = deadline - time.monotonic()
                if granted:
                    return
                if left <= 0:
                    raise self._rejected(started_at)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, POLL_S)):
                        await self._wake.wait()
        finally:
            self._head.release()

    def _rejected(self, started_at: float) -> GuardRejected:
        return GuardRejected(time.monotonic() - started_at, self._retry_after_s)

    def _give_back(self, tokens: list[str]) -> None:
        """Return slots without blocking the caller; kept for later while Redis is away."""
        if not self._up:
            self._orphans.update(tokens)
            return
        task = asyncio.get_running_loop().create_task(self._return(tokens))
        self._returns.add(task)
        task.add_done_callback(self._returns.discard)

    async def _return(self, tokens: list[str]) -> None:
        try:
            held = await self._budget.release(tokens)
        except BackendError as exc:
            self._orphans.update(tokens)
            self._failed(exc)
            return
        self._report.guard_in_flight("cluster", held)
        self._wake.set()

    async def _renewing(self) -> None:
        """Renew every ``renew_s`` while Redis answers; probe every ``PROBE_S`` while not."""
        while True:
            if self._up:
                self._fell.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._renew_s):
                        await self._fell.wait()
            if not self._up:
                await asyncio.sleep(PROBE_S)
            await self._maintain()

    async def _maintain(self) -> None:
        """Return orphans, renew held slots and read the count; doubles as the recovery probe."""
        orphans = list(self._orphans)
        renewing = list(self._held)
        try:
            if orphans:
                await self._budget.release(orphans)
                self._orphans.difference_update(orphans)
            held = await self._budget.renew(renewing)
        except BackendError as exc:
            self._failed(exc)
            return
        self._report.guard_in_flight("cluster", held)
        if not self._up:
            self._set_up(True)
            self._wake.set()
        # A slot released while the renewal was on its way may have been renewed after its
        # release reached Redis: return it again rather than leave it leased for a lease.
        renewed_after_release = [token for token in renewing if token not in self._held]
        if renewed_after_release:
            self._give_back(renewed_after_release)

    def _failed(self, exc: BackendError) -> None:
        self._report.guard_backend_error()
        self._fell.set()
        self._set_up(False, str(exc))

    def _set_up(self, up: bool, error: str | None = None) -> None:
        if self._up == up:
            return
        self._up = up
        self._report.guard_backend(up)
        if up:
            self._log.info("guard_backend_up", backend="redis")
        else:
            self._log.warning("guard_backend_down", backend="redis", error=error)
