"""One proxied request/response pair and the facts observed about it.

Pure data, no I/O. While an exchange runs, the proxy and the readers only stamp times and
store facts; durations are derived once, after ``finish``. Invariant: every exchange ends
exactly once, with one ``Outcome``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Outcome(StrEnum):
    """How an exchange ended (the ``outcome`` label)."""

    COMPLETED = "completed"
    CLIENT_DISCONNECTED = "client_disconnected"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_ABORTED = "upstream_aborted"
    REJECTED = "rejected"


@dataclass(slots=True)
class Usage:
    """Token counts as billed. ``None`` means "not reported", which is kept apart from 0."""

    input: int | None = None
    output: int | None = None
    cache_hit: int | None = None
    cache_miss: int | None = None
    reasoning: int | None = None
    cache_write: int | None = None


@dataclass(frozen=True, slots=True)
class Cost:
    """Estimated USD spend of one exchange, split as ``llm_cost_usd_total`` is labelled."""

    cache_hit_usd: float
    cache_miss_usd: float
    output_usd: float
    savings_usd: float  # what the cache hits saved versus paying the cache-miss price

    @property
    def total(self) -> float:
        return self.cache_hit_usd + self.cache_miss_usd + self.output_usd


@dataclass(slots=True)
class RateLimits:
    """What the upstream said about its limits on this response."""

    retry_after_s: float | None = None
    reported_concurrency_limit: int | None = None
    limit: dict[str, float] = field(default_factory=dict)
    remaining: dict[str, float] = field(default_factory=dict)
    reset_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TraceIds:
    """The exchange's span in W3C trace context, fixed when the request is forwarded (its span
    id goes upstream in ``traceparent``); only set when OpenTelemetry export is on."""

    trace_id: int
    span_id: int
    parent_span_id: int | None  # None: the exchange's span is a trace root
    flags: int  # W3C trace flags: 0x01 sampled, 0x02 random trace id
    trace_state: tuple[tuple[str, str], ...] = ()  # the client's tracestate entries

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)


@dataclass(slots=True)
class Exchange:
    """Everything known about one exchange; ``*_at`` are ``time.monotonic()`` stamps."""

    request_id: str
    method: str
    route: str
    received_at: float
    started_wall: datetime
    upstream: str = ""  # the upstream that answered (its label); set when the exchange starts
    fallback_from: str | None = None  # the primary upstream, when a fallback answered instead
    requested_model: str | None = None
    stream: bool = False
    sent_at: float | None = None
    body_read_at: float | None = None
    response_started_at: float | None = None
    first_data_at: float | None = None
    first_token_at: float | None = None
    response_requested_at: float | None = None  # realtime: the client's first response.create
    last_token_at: float | None = None
    saw_queue_signal: bool = False
    ended_at: float | None = None
    status: int | None = None
    reported_model: str | None = None
    usage: Usage | None = None
    limits: RateLimits = field(default_factory=RateLimits)
    upstream_trace_id: str | None = None
    attempts: int = 0
    attempt_codes: list[str] = field(default_factory=list)
    # Attempts at upstreams that did not answer, as (upstream, code): before a fallback took over.
    prior_attempts: list[tuple[str, str]] = field(default_factory=list)
    fallbacks: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, reason)
    guard_wait_s: float | None = None
    sidecar_error: str | None = None
    parse_error: str | None = None
    observer_error: str | None = None
    cost: Cost | None = None
    cost_usd: float | None = None
    unpriced: bool = False
    outcome: Outcome | None = None
    trace: TraceIds | None = None
    response_id: str | None = None  # the upstream's id of the completion (``chatcmpl-...``)
    finish_reasons: tuple[str, ...] = ()  # one per choice, as the upstream reported them

    @property
    def model(self) -> str | None:
        """The model the upstream reported, else the one requested."""
        return self.reported_model or self.requested_model

    def finish(self, outcome: Outcome, now: float) -> bool:
        """End the exchange; returns False (and changes nothing) if it had already ended."""
        if self.outcome is not None:
            return False
        self.outcome = outcome
        self.ended_at = now
        return True

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.received_at

    @property
    def ttft_s(self) -> float | None:
        """Streams: from arrival; realtime sessions: from the first ``response.create`` sent,
        since a session may sit idle for minutes before it asks for anything."""
        if not self.stream or self.first_token_at is None:
            return None
        start = self.response_requested_at
        return self.first_token_at - (self.received_at if start is None else start)

    @property
    def queue_s(self) -> float | None:
        """Arrival to first data, only when the upstream signalled queueing before it."""
        if not self.saw_queue_signal or self.first_data_at is None:
            return None
        return self.first_data_at - self.received_at

    @property
    def time_per_output_token_s(self) -> float | None:
        """(last token - first token) / (output tokens - 1), as vLLM defines it."""
        if not self.stream or self.first_token_at is None or self.last_token_at is None:
            return None
        output = self.usage.output if self.usage else None
        if output is None or output < 2:
            return None
        return (self.last_token_at - self.first_token_at) / (output - 1)

    @property
    def overhead_s(self) -> float | None:
        """Body received to request sent, minus any time queued by the concurrency guard."""
        if self.sent_at is None or self.body_read_at is None:
            return None
        return self.sent_at - self.body_read_at - (self.guard_wait_s or 0.0)
