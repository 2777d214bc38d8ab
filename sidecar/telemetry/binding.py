"""The series one exchange label set writes, bound once so ``Metrics.record`` looks up once.

Without it, an exchange looked each of its fifteen-odd series up by name and label values (one
tuple and one dict lookup each); with it, ``record`` does one lookup of the exchange's label set
and then plain attribute updates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sidecar.telemetry.series import CounterSeries, GaugeSeries, HistogramSeries

__all__ = ["Bound"]


class Bound:
    """The series that finished exchanges of one label set write, found with one lookup.

    One per (upstream, route, model label, stream, status, outcome) that ``record`` has seen,
    kept for the process' life: each is the key of an ``llm_requests_total`` series (a status
    of None and 499, an outcome of None and ``completed``, share one), and every one of those
    labels takes a bounded set of values (``labels.py``: routes are a closed set, models are
    capped with an ``other`` overflow, upstreams come from the configuration, a status is an
    HTTP status code, outcomes are an enum), so the cache is bounded as that metric is.

    ``in_flight`` and ``requests`` exist from the start; every other series is created the
    first time it is written (``bind``, ``keyed``), exactly when looking it up per exchange
    created it, so the exposition lists the same series in the same order. Series are shared
    with ``Metrics._child``'s cache: two label sets that write one series hold the same object.
    """

    __slots__ = (
        "_child",
        "attempts",
        "cost_hit",
        "cost_miss",
        "cost_output",
        "duration",
        "guard_wait",
        "in_flight",
        "input_tokens",
        "model",
        "output_tokens",
        "overhead",
        "parse_errors",
        "queue",
        "ratelimit_limit",
        "ratelimit_remaining",
        "ratelimit_reset",
        "reported_limit",
        "requests",
        "retry_after",
        "route",
        "savings",
        "stream",
        "tokens",
        "tpot",
        "ttft",
        "unpriced",
        "up",
        "usage_missing",
    )

    def __init__(
        self, child: Callable[..., Any], labels: tuple[str, str, str, str, str, str]
    ) -> None:
        up, route, model, stream = labels[:4]
        self._child = child
        self.up, self.route, self.model, self.stream = up, route, model, stream
        self.in_flight: GaugeSeries = child("llm_in_flight_requests", up, route)
        self.requests: CounterSeries = child("llm_requests_total", *labels)
        self.duration: HistogramSeries | None = None
        self.ttft: HistogramSeries | None = None
        self.tpot: HistogramSeries | None = None
        self.queue: HistogramSeries | None = None
        self.usage_missing: CounterSeries | None = None
        self.input_tokens: HistogramSeries | None = None
        self.output_tokens: HistogramSeries | None = None
        self.overhead: HistogramSeries | None = None
        self.guard_wait: HistogramSeries | None = None
        self.retry_after: HistogramSeries | None = None
        self.reported_limit: GaugeSeries | None = None
        self.unpriced: CounterSeries | None = None
        self.cost_hit: CounterSeries | None = None
        self.cost_miss: CounterSeries | None = None
        self.cost_output: CounterSeries | None = None
        self.savings: CounterSeries | None = None
        # By the last label's value: token type, parse error kind, attempt code, resource.
        self.tokens: dict[str, CounterSeries] = {}
        self.parse_errors: dict[str, CounterSeries] = {}
        self.attempts: dict[str, CounterSeries] = {}
        self.ratelimit_limit: dict[str, GaugeSeries] = {}
        self.ratelimit_remaining: dict[str, GaugeSeries] = {}
        self.ratelimit_reset: dict[str, GaugeSeries] = {}

    def bind(self, slot: str) -> Any:
        """Create (or find) the series of ``slot`` and keep it there."""
        name, labels = _LAZY[slot]
        series = self._child(name, *labels(self))
        setattr(self, slot, series)
        return series

    def keyed(self, slot: str, value: str) -> Any:
        """Create (or find) the series of ``slot`` whose last label is ``value``; keep it."""
        name, labels = _LAZY[slot]
        series = self._child(name, *labels(self), value)
        getattr(self, slot)[value] = series
        return series


def _up(b: Bound) -> tuple[str, ...]:
    return (b.up,)


def _up_model(b: Bound) -> tuple[str, ...]:
    return (b.up, b.model)


def _up_route(b: Bound) -> tuple[str, ...]:
    return (b.up, b.route)


def _up_route_model(b: Bound) -> tuple[str, ...]:
    return (b.up, b.route, b.model)


# Each lazily bound slot: its metric, and its label values but the last of a keyed slot.
_LAZY: dict[str, tuple[str, Callable[[Bound], tuple[str, ...]]]] = {
    "duration": (
        "llm_request_duration_seconds",
        lambda b: (b.up, b.route, b.model, b.stream),
    ),
    "ttft": ("llm_time_to_first_token_seconds", _up_route_model),
    "tpot": ("llm_time_per_output_token_seconds", _up_route_model),
    "queue": ("llm_upstream_queue_seconds", _up_route_model),
    "usage_missing": ("llm_usage_missing_total", _up_route_model),
    "tokens": ("llm_tokens_total", _up_model),
    "input_tokens": ("llm_request_tokens", lambda b: (b.up, b.model, "input")),
    "output_tokens": ("llm_request_tokens", lambda b: (b.up, b.model, "output")),
    "overhead": ("llm_sidecar_overhead_seconds", _up),
    "parse_errors": ("llm_sidecar_parse_errors_total", _up),
    "attempts": ("llm_upstream_attempts_total", _up_route),
    "guard_wait": ("llm_sidecar_guard_wait_seconds", _up),
    "retry_after": ("llm_retry_after_seconds", _up),
    "reported_limit": ("llm_upstream_concurrency_limit", lambda b: (b.up, "reported")),
    "ratelimit_limit": ("llm_ratelimit_limit", _up),
    "ratelimit_remaining": ("llm_ratelimit_remaining", _up),
    "ratelimit_reset": ("llm_ratelimit_reset_seconds", _up),
    "unpriced": ("llm_sidecar_unpriced_requests_total", _up_model),
    "cost_hit": ("llm_cost_usd_total", lambda b: (b.up, b.model, "cache_hit")),
    "cost_miss": ("llm_cost_usd_total", lambda b: (b.up, b.model, "cache_miss")),
    "cost_output": ("llm_cost_usd_total", lambda b: (b.up, b.model, "output")),
    "savings": ("llm_cache_savings_usd_total", _up_model),
}
