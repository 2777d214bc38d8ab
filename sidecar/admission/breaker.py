"""A circuit breaker per upstream: closed, open for a cooldown, then one probe (half-open).

Pure state, no I/O: the proxy asks ``admit`` before sending to an upstream and reports the
verdict on the ``Ticket`` it got. After ``failures`` consecutive failures the breaker opens;
for ``cooldown_s`` nothing is admitted; then the next request to ask becomes the only probe
(half-open) and closes the breaker when it succeeds or re-opens it when it fails. The
transition to half-open happens when a request asks, not on a timer: an idle upstream stays
"open" until someone needs it. Verdicts from tickets issued before the last state change are
ignored, so a request that was admitted long ago (a slow failure) never re-opens a breaker
that a later probe already closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from time import monotonic

__all__ = ["Breaker", "State", "Ticket"]


class State(IntEnum):
    """The value of ``llm_upstream_circuit_state``."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True, slots=True)
class Ticket:
    """Permission to send one request; ``generation`` ties its verdict to one breaker state."""

    generation: int
    probe: bool = False


class Breaker:
    """Consecutive-failure breaker; ``on_change`` is called with every new state."""

    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        if failures < 1 or not cooldown_s > 0:
            raise ValueError(f"need failures >= 1 and cooldown_s > 0, got {failures}, {cooldown_s}")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.on_change = on_change
        self.state = State.CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.generation = 0
        self.probing = False

    def admit(self) -> Ticket | None:
        """A ticket when a request may go to this upstream now, else None."""
        if self.state is State.CLOSED:
            return Ticket(self.generation)
        if self.state is State.OPEN:
            if self.clock() - self.opened_at < self.cooldown_s:
                return None
            self._become(State.HALF_OPEN)
        if self.probing:
            return None
        self.probing = True
        return Ticket(self.generation, probe=True)

    def succeeded(self, ticket: Ticket) -> None:
        if ticket.generation != self.generation:
            return
        self.consecutive = 0
        if self.state is State.HALF_OPEN:
            self._become(State.CLOSED)

    def failed(self, ticket: Ticket) -> None:
        if ticket.generation != self.generation:
            return
        if self.state is State.HALF_OPEN:
            self._open()
            return
        self.consecutive += 1
        if self.consecutive >= self.failures:
            self._open()

    def abandoned(self, ticket: Ticket) -> None:
        """The request ended without a verdict (the client left): the next one may probe."""
        if ticket.probe and ticket.generation == self.generation:
            self.probing = False

    def _open(self) -> None:
        self.opened_at = self.clock()
        self._become(State.OPEN)

    def _become(self, state: State) -> None:
        self.state = state
        self.generation += 1
        self.consecutive = 0
        self.probing = False
        if self.on_change is not None:
            self.on_change(state)
