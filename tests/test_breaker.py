"""The circuit breaker's schedule, step by step on a clock the test moves."""

from __future__ import annotations

import pytest

from sidecar.admission.breaker import Breaker, State, Ticket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, seen: list[State], failures: int = 3) -> Breaker:
    return Breaker(failures, 30.0, clock, seen.append)


def state(b: Breaker) -> State:
    """Read through a call: the state changes behind mypy's narrowing."""
    return b.state


def admitted(b: Breaker) -> Ticket:
    ticket = b.admit()
    assert ticket is not None
    return ticket


def test_opens_after_consecutive_failures_only(clock: Clock) -> None:
    seen: list[State] = []
    b = breaker(clock, seen)
    for _ in range(2):
        b.failed(admitted(b))
    b.succeeded(admitted(b))  # a success in between starts the count again
    for _ in range(2):
        b.failed(admitted(b))
    assert state(b) is State.CLOSED and seen == []
    b.failed(admitted(b))
    assert state(b) is State.OPEN and seen == [State.OPEN]
    assert b.admit() is None


def test_half_opens_after_the_cooldown_with_one_probe_then_closes(clock: Clock) -> None:
    seen: list[State] = []
    b = breaker(clock, seen, failures=1)
    b.failed(admitted(b))
    clock.now += 29.999
    assert b.admit() is None and state(b) is State.OPEN
    clock.now += 0.001
    probe = admitted(b)
    assert probe.probe and state(b) is State.HALF_OPEN
    assert b.admit() is None  # one probe at a time; the others still go elsewhere
    b.succeeded(probe)
    assert state(b) is State.CLOSED
    assert seen == [State.OPEN, State.HALF_OPEN, State.CLOSED]
    assert not admitted(b).probe


def test_a_failed_probe_opens_again_for_a_whole_cooldown(clock: Clock) -> None:
    seen: list[State] = []
    b = breaker(clock, seen, failures=1)
    b.failed(admitted(b))
    clock.now += 30
    b.failed(admitted(b))
    assert state(b) is State.OPEN
    clock.now += 29
    assert b.admit() is None
    clock.now += 1
    assert admitted(b).probe
    assert seen == [State.OPEN, State.HALF_OPEN, State.OPEN, State.HALF_OPEN]


def test_an_abandoned_probe_lets_the_next_request_probe(clock: Clock) -> None:
    b = breaker(clock, [], failures=1)
    b.failed(admitted(b))
    clock.now += 30
    probe = admitted(b)
    b.abandoned(probe)
    assert state(b) is State.HALF_OPEN
    assert admitted(b).probe


def test_verdicts_from_before_a_state_change_are_ignored(clock: Clock) -> None:
    b = breaker(clock, [], failures=1)
    slow = admitted(b)  # admitted while closed, answers long after
    b.failed(admitted(b))
    clock.now += 30
    probe = admitted(b)
    b.succeeded(probe)
    b.failed(slow)  # stale: the probe already closed the breaker
    assert state(b) is State.CLOSED
    assert b.consecutive == 0


@pytest.mark.parametrize(("failures", "cooldown_s"), [(0, 1.0), (1, 0.0), (1, float("nan"))])
def test_bad_parameters(failures: int, cooldown_s: float) -> None:
    with pytest.raises(ValueError):
        Breaker(failures, cooldown_s)
