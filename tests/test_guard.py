"""The concurrency guard: FIFO admission, rejection, and cancellation safety."""

from __future__ import annotations

import asyncio
import random

import pytest

from sidecar.admission.guard import ConcurrencyGuard, GuardRejected


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_free_slots_are_taken_without_waiting() -> None:
    guard = ConcurrencyGuard(limit=2, max_wait_s=1)
    assert await guard.acquire() == 0.0
    assert await guard.acquire() == 0.0
    assert (guard.in_use, guard.waiting) == (2, 0)
    guard.release()
    guard.release()
    assert guard.in_use == 0


async def test_ten_waiters_are_admitted_in_arrival_order() -> None:
    guard = ConcurrencyGuard(limit=1, max_wait_s=10)
    await guard.acquire()
    admitted: list[int] = []

    async def wait(n: int) -> None:
        await guard.acquire()
        admitted.append(n)

    tasks = []
    for n in range(10):
        tasks.append(asyncio.create_task(wait(n)))
        await settle()  # n is queued before n + 1 arrives
    assert guard.waiting == 10
    for expected in range(10):
        guard.release()
        await settle()
        assert admitted == list(range(expected + 1))
        assert guard.in_use == 1
    guard.release()
    await asyncio.gather(*tasks)
    assert (guard.in_use, guard.waiting) == (0, 0)


async def test_a_newcomer_cannot_overtake_a_waiter_being_handed_a_slot() -> None:
    guard = ConcurrencyGuard(limit=1, max_wait_s=10)
    await guard.acquire()
    first = asyncio.create_task(guard.acquire())
    await settle()
    guard.release()  # the slot now belongs to `first`, which has not run yet
    newcomer = asyncio.create_task(guard.acquire())
    await settle()
    assert first.done()
    assert not newcomer.done()
    assert (guard.in_use, guard.waiting) == (1, 1)
    guard.release()
    await newcomer
    guard.release()
    assert guard.in_use == 0


async def test_rejection_after_max_wait() -> None:
    guard = ConcurrencyGuard(limit=1, max_wait_s=0.05)
    await guard.acquire()
    with pytest.raises(GuardRejected) as caught:
        await guard.acquire()
    assert caught.value.waited_s >= 0.049  # the loop may fire a timer a clock tick early
    assert caught.value.retry_after_s == 1
    assert (guard.in_use, guard.waiting) == (1, 0)
    guard.release()
    assert await guard.acquire() == 0.0  # the rejected waiter left nothing behind


async def test_zero_wait_rejects_at_once_and_retry_after_rounds_up() -> None:
    guard = ConcurrencyGuard(limit=1, max_wait_s=0)
    await guard.acquire()
    with pytest.raises(GuardRejected) as caught:
        await guard.acquire()
    assert caught.value.waited_s == 0.0
    assert caught.value.retry_after_s == 1
    assert ConcurrencyGuard(limit=1, max_wait_s=2.5)._retry_after_s == 3


async def test_cancelled_waiter_leaves_the_queue_in_order() -> None:
    guard = ConcurrencyGuard(limit=1, max_wait_s=10)
    await guard.acquire()
    order: list[str] = []

    async def wait(name: str) -> None:
        await guard.acquire()
        order.append(name)

    a, b, c = (asyncio.create_task(wait(n)) for n in "abc")
    await settle()
    b.cancel()
    await settle()
    assert b.cancelled()
    assert guard.waiting == 2
    guard.release()
    await settle()
    guard.release()
    await settle()
    assert order == ["a", "c"]
    guard.release()
    await asyncio.gather(a, c)
    assert (guard.in_use, guard.waiting) == (0, 0)


async def test_slot_handed_to_a_waiter_cancelled_in_the_same_turn_is_passed_on() -> None:
    guard = ConcurrencyGuard(limit=1, max_wait_s=10)
    await guard.acquire()
    first = asyncio.create_task(guard.acquire())
    second = asyncio.create_task(guard.acquire())
    await settle()
    guard.release()  # slot handed to `first` ...
    first.cancel()  # ... which is cancelled before it could run
    await settle()
    assert first.cancelled()
    assert second.done()
    assert (guard.in_use, guard.waiting) == (1, 0)
    guard.release()
    assert guard.in_use == 0


async def test_admit_releases_on_error() -> None:
    guard = ConcurrencyGuard(limit=1, max_wait_s=1)
    with pytest.raises(RuntimeError, match="boom"):
        async with guard.admit() as waited_s:
            assert waited_s == 0.0
            assert guard.in_use == 1
            raise RuntimeError("boom")
    assert guard.in_use == 0


async def test_release_without_acquire_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        ConcurrencyGuard(limit=1, max_wait_s=1).release()


@pytest.mark.parametrize(("limit", "max_wait_s"), [(0, 1.0), (1, -1.0), (1, float("nan"))])
def test_bad_arguments(limit: int, max_wait_s: float) -> None:
    with pytest.raises(ValueError):
        ConcurrencyGuard(limit=limit, max_wait_s=max_wait_s)


@pytest.mark.parametrize("seed", range(20))
async def test_no_slot_leaks_under_random_cancellation(seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.randint(1, 4)
    guard = ConcurrencyGuard(limit=limit, max_wait_s=rng.choice([0.0, 0.002, 0.02, 1.0]))
    holders = 0
    peak = 0

    async def client() -> None:
        nonlocal holders, peak
        try:
            async with guard.admit():
                holders += 1
                peak = max(peak, holders)
                try:
                    await asyncio.sleep(rng.choice([0, 0, 0.001, 0.003]))
                finally:
                    holders -= 1
        except GuardRejected:
            pass

    tasks = [asyncio.create_task(client()) for _ in range(40)]
    for _ in range(30):
        await asyncio.sleep(rng.choice([0, 0.001]))
        victim = rng.choice(tasks)
        victim.cancel()
        assert guard.in_use <= limit
    await asyncio.gather(*tasks, return_exceptions=True)
    assert (guard.in_use, guard.waiting, holders) == (0, 0, 0)
    assert peak <= limit
    assert await guard.acquire() == 0.0
