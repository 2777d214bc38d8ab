"""Retry policy: jitter bounds, Retry-After, the wait budget, and header parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.admission.retry import RetryPolicy, is_retryable_status
from sidecar.observe.limits import parse_retry_after

NOW = datetime(2026, 11, 30, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(429, True), (503, True), (500, False), (502, False), (400, False), (200, False)],
)
def test_retryable_statuses(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (8, 30.0)]
)
def test_full_jitter_bounds_over_many_draws(attempt: int, ceiling: float) -> None:
    policy = RetryPolicy(max_attempts=100, max_wait_s=1000.0)
    rng = random.Random(attempt)
    draws = [policy.delay_before(attempt, None, 0.0, rng) for _ in range(5000)]
    values = [d for d in draws if d is not None]
    assert len(values) == len(draws)
    assert all(0.0 <= v <= ceiling for v in values)
    # Full jitter spreads over the whole range, not just near the ceiling.
    assert min(values) < 0.05 * ceiling
    assert max(values) > 0.95 * ceiling
    assert sum(values) / len(values) == pytest.approx(ceiling / 2, rel=0.05)


def test_attempts_run_out() -> None:
    policy = RetryPolicy(max_attempts=3, max_wait_s=100.0)
    rng = random.Random(1)
    assert policy.delay_before(1, None, 0.0, rng) is not None
    assert policy.delay_before(2, None, 0.0, rng) is not None
    assert policy.delay_before(3, None, 0.0, rng) is None
    assert RetryPolicy(max_attempts=1, max_wait_s=100.0).delay_before(1, None, 0.0, rng) is None


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(max_attempts=5, max_wait_s=100.0)
    rng = random.Random(2)
    for _ in range(1000):
        delay = policy.delay_before(1, 7.5, 0.0, rng)
        assert delay == 7.5  # backoff ceiling is 0.5 s, so Retry-After always wins here
    delays = {policy.delay_before(4, 3.0, 0.0, rng) for _ in range(200)}  # ceiling 4 s
    assert all(d is not None and 3.0 <= d <= 4.0 for d in delays)
    assert len(delays) > 1


def test_retry_after_beyond_the_budget_gives_up_at_once() -> None:
    policy = RetryPolicy(max_attempts=5, max_wait_s=10.0)
    rng = random.Random(3)
    assert policy.delay_before(1, 10.0, 0.0, rng) == 10.0  # exactly what is left: fine
    assert policy.delay_before(1, 10.01, 0.0, rng) is None
    assert policy.delay_before(2, 4.0, 6.5, rng) is None  # 3.5 s left
    assert policy.delay_before(2, None, 10.0, rng) is None  # budget spent


def test_negative_retry_after_counts_as_zero() -> None:
    policy = RetryPolicy(max_attempts=2, max_wait_s=1.0, base_s=0.0)
    assert policy.delay_before(1, -5.0, 0.0, random.Random(0)) == 0.0


@given(
    attempts=st.integers(1, 8),
    max_wait_s=st.floats(0, 120),
    base_s=st.floats(0, 5),
    cap_s=st.floats(0, 60),
    retry_after=st.none() | st.floats(0, 200),
    seed=st.integers(0, 2**32),
)
def test_budget_is_never_exceeded(
    attempts: int,
    max_wait_s: float,
    base_s: float,
    cap_s: float,
    retry_after: float | None,
    seed: int,
) -> None:
    policy = RetryPolicy(max_attempts=attempts, max_wait_s=max_wait_s, base_s=base_s, cap_s=cap_s)
    rng = random.Random(seed)
    waited, attempt = 0.0, 1
    while (delay := policy.delay_before(attempt, retry_after, waited, rng)) is not None:
        assert delay >= 0
        if retry_after is not None:
            assert delay >= retry_after
        assert delay <= min(max(cap_s, retry_after or 0), max_wait_s - waited)
        waited += delay
        attempt += 1
        if delay == 0 and attempt > 50:
            break
    assert waited <= max_wait_s
    assert attempt <= attempts


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0, "max_wait_s": 1.0},
        {"max_attempts": 2, "max_wait_s": -1.0},
        {"max_attempts": 2, "max_wait_s": float("inf")},
        {"max_attempts": 2, "max_wait_s": 1.0, "base_s": float("nan")},
    ],
)
def test_bad_policies(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"RETRY-AFTER": " 20 "}, 20.0),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"Retry-After-Ms": "12.5"}, 0.0125),
        ({"retry-after-ms": "-1"}, 0.0),
        ({"retry-after-ms": "100", "retry-after": "9"}, 0.1),  # milliseconds first
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),  # garbage ms falls through
        ({"retry-after-ms": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "Mon, 30 Nov 2026 03:00:42 GMT"}, 42.0),
        ({"retry-after": "Mon, 30 Nov 2026 04:00:00 +0100"}, 0.0),  # 03:00 UTC: now
        ({"retry-after": "Mon, 30 Nov 2026 03:01:00 -0000"}, 60.0),
        ({"retry-after": "Sun, 29 Nov 2026 03:00:00 GMT"}, 0.0),  # in the past
        ({"retry-after": "tomorrow"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "Mon, 99 Nov 2026 03:00:00 GMT"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, NOW) == expected
