"""The metric families of one sidecar, built from ``specs.SPECS``; ``record`` is the only writer.

Each ``Metrics`` takes an injected registry, so tests build a fresh ``CollectorRegistry`` and
read exact values.
The series are plain numbers (``series.py``): an exchange's fifteen-odd updates are attribute
increments, not locked prometheus_client children, and ``record`` finds them with one lookup of
the exchange's label set (``Bound``) instead of one per series.
"""

from __future__ import annotations

import platform
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector

from sidecar import __version__
from sidecar.exchange import Exchange, Outcome
from sidecar.telemetry.binding import Bound
from sidecar.telemetry.labels import ROUTES, USAGE_ROUTES, ModelLabels
from sidecar.telemetry.series import Family, GaugeSeries
from sidecar.telemetry.specs import (
    CONFIGURED_RESOURCES,
    PARSE_ERROR_KINDS,
    SPECS,
    TOKEN_TYPES,
    Spec,
)

if TYPE_CHECKING:
    from sidecar.accounting.balance import BalanceReport


# Histograms whose observations carry the exchange's request id as an exemplar (OpenMetrics).
EXEMPLAR_HISTOGRAMS = frozenset({"llm_request_duration_seconds", "llm_time_to_first_token_seconds"})


def _build(spec: Spec, registry: CollectorRegistry) -> Family:
    family = Family(
        spec.name,
        spec.kind,
        spec.help,
        spec.labels,
        spec.buckets,
        exemplars=spec.name in EXEMPLAR_HISTOGRAMS,
    )
    registry.register(family)
    return family


# ``Metrics._usage`` reads the values of ``Usage`` in this order.
assert TOKEN_TYPES == ("input", "output", "cache_hit", "cache_miss", "reasoning", "cache_write")


class Metrics:
    """The metric families of one sidecar process, bound to one upstream label value.

    Updates run on the event loop's thread (see ``series.py``), except two counters that other
    threads bump: dropped log lines (the writer thread, on a broken stdout) and dropped
    OpenTelemetry items (the exporter's threads); those take ``_lock``.
    """

    def __init__(
        self, registry: CollectorRegistry, upstream: str, model_labels: ModelLabels
    ) -> None:
        self.registry = registry
        self.upstream = upstream
        self.models = model_labels
        self.families: dict[str, Family] = {s.name: _build(s, registry) for s in SPECS}
        self._children: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()
        self._precreate()
        # This upstream's in-flight gauges by route, and the series of each exchange label set
        # seen (both bounded: see ``Bound``), so an exchange finds its series in one lookup.
        self._in_flight: dict[str, GaugeSeries] = {
            route: self._child("llm_in_flight_requests", self.upstream, route) for route in ROUTES
        }
        self._bound: dict[tuple[Any, ...], Bound] = {}
        # process_open_fds / process_max_fds (and CPU, memory): the fd alert needs them.
        ProcessCollector(registry=registry)

    def _child(self, name: str, *values: str) -> Any:
        """The series of ``name`` for ``values``: one dict lookup across every family.

        The cache is bounded because every label value is (see ``labels.py``).
        """
        key = (name, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.families[name].labels(values)
        return child

    def _precreate(self) -> None:
        """Known label values exist at zero, so rate() and absent() behave from the start."""
        up = self.upstream
        self._child("llm_sidecar_build_info", __version__, platform.python_version()).set(1)
        for route in ROUTES:
            self._child("llm_in_flight_requests", up, route)
        for kind in PARSE_ERROR_KINDS:
            self._child("llm_sidecar_parse_errors_total", up, kind)
        self._child("llm_sidecar_overhead_seconds", up)
        self._child("llm_retry_after_seconds", up)

    def started(self, route: str) -> None:
        series = self._in_flight.get(route)
        if series is None:  # not one of ROUTES: a caller's bug, still counted as before
            series = self._child("llm_in_flight_requests", self.upstream, route)
        series.value += 1.0

    def moved(self, route: str, from_upstream: str, to_upstream: str) -> None:
        """An exchange in flight changed upstream (fallback): its in-flight count follows it."""
        self._child("llm_in_flight_requests", from_upstream, route).dec()
        self._child("llm_in_flight_requests", to_upstream, route).inc()

    def record(self, ex: Exchange) -> None:
        """Write everything one finished exchange contributes. Called exactly once per exchange.

        Every series carries the upstream that answered (``ex.upstream``): a fallback's exchanges
        are its own, and attempts at upstreams that did not answer count under theirs.
        """
        up, route = ex.upstream or self.upstream, ex.route
        model = self.models.label(ex.model)
        key = (up, route, model, ex.stream, ex.status, ex.outcome)
        b = self._bound.get(key) or self._bind(key)
        b.in_flight.value -= 1.0
        b.requests.value += 1.0
        exemplar = None
        duration = ex.duration_s
        if duration is not None:
            exemplar = {"request_id": ex.request_id[:64]}
            (b.duration or b.bind("duration")).observe(duration, exemplar)
        self._timings(ex, b, exemplar)
        self._usage(ex, b)
        self._limits(ex, b)
        overhead = ex.overhead_s
        if overhead is not None:
            (b.overhead or b.bind("overhead")).observe(overhead)
        kind = ex.parse_error
        if kind is not None:
            (b.parse_errors.get(kind) or b.keyed("parse_errors", kind)).value += 1.0
        for attempt_code in ex.attempt_codes:
            (b.attempts.get(attempt_code) or b.keyed("attempts", attempt_code)).value += 1.0
        for tried, attempt_code in ex.prior_attempts:
            self._child("llm_upstream_attempts_total", tried, route, attempt_code).inc()
        for from_upstream, to_upstream, reason in ex.fallbacks:
            self.fallback(from_upstream, to_upstream, reason)
        if ex.guard_wait_s is not None:
            (b.guard_wait or b.bind("guard_wait")).observe(ex.guard_wait_s)
        self._cost(ex, b)

    def _bind(self, key: tuple[Any, ...]) -> Bound:
        """The first exchange of a label set: its label values, its series."""
        up, route, model, stream, status, outcome = key
        labels = (
            up,
            route,
            model,
            "true" if stream else "false",
            str(status) if status is not None else "499",
            (outcome or Outcome.COMPLETED).value,
        )
        bound = self._bound[key] = Bound(self._child, labels)
        return bound

    @staticmethod
    def _cost(ex: Exchange, b: Bound) -> None:
        if ex.unpriced:
            (b.unpriced or b.bind("unpriced")).value += 1.0
        cost = ex.cost
        if cost is None:
            return
        (b.cost_hit or b.bind("cost_hit")).inc(cost.cache_hit_usd)
        (b.cost_miss or b.bind("cost_miss")).inc(cost.cache_miss_usd)
        (b.cost_output or b.bind("cost_output")).inc(cost.output_usd)
        (b.savings or b.bind("savings")).inc(cost.savings_usd)

    def configured(self, rpm: int, tpm: int, concurrency: int) -> None:
        """Export the account's configured limits (0 = not configured, no series)."""
        up = self.upstream
        for resource, value in zip(CONFIGURED_RESOURCES, (rpm, tpm, concurrency), strict=True):
            if value > 0:
                self._child("llm_ratelimit_configured", up, resource).set(value)
        if concurrency > 0:
            self._child("llm_upstream_concurrency_limit", up, "configured").set(concurrency)

    def retirements(self, dates: dict[str, datetime]) -> None:
        for model, when in dates.items():
            self._child("llm_model_retirement_timestamp_seconds", model).set(when.timestamp())

    def balance(self, report: BalanceReport) -> None:
        up = self.upstream
        self._child("llm_account_available", up).set(1 if report.is_available else 0)
        for currency, amount in report.total_balance.items():
            self._child("llm_account_balance", up, currency).set(amount)

    def log_line_dropped(self) -> None:
        """Called on the loop and from the log writer's thread."""
        with self._lock:
            self._child("llm_sidecar_log_lines_dropped_total").inc()

    def otel_dropped(self, signal: str, count: int = 1) -> None:
        """``signal`` is ``spans`` or ``metrics``; called from the exporter's threads."""
        with self._lock:
            self._child("llm_sidecar_otel_dropped_total", signal).inc(count)

    def fallback(self, from_upstream: str, to_upstream: str, reason: str, count: int = 1) -> None:
        """``count=0`` creates the series at zero (known pairs, so rate() works from the start)."""
        self._child("llm_fallbacks_total", from_upstream, to_upstream, reason).inc(count)

    def circuit_state(self, upstream: str, state: int) -> None:
        self._child("llm_upstream_circuit_state", upstream).set(state)

    def guard_backend(self, up: bool) -> None:
        self._child("llm_sidecar_guard_backend_up", "redis").set(1 if up else 0)

    def guard_backend_error(self) -> None:
        self._child("llm_sidecar_guard_backend_errors_total", "redis").inc()

    def guard_in_flight(self, scope: str, count: int) -> None:
        self._child("llm_sidecar_guard_in_flight", scope).set(count)

    def fd_exhausted(self) -> None:
        self._child("llm_sidecar_fd_exhausted_total").inc()

    def balance_failure(self, reason: str) -> None:
        self._child("llm_sidecar_balance_poll_failures_total", self.upstream, reason).inc()

    @staticmethod
    def _timings(ex: Exchange, b: Bound, exemplar: dict[str, str] | None) -> None:
        ttft = ex.ttft_s
        if ttft is not None:
            if exemplar is None:
                exemplar = {"request_id": ex.request_id[:64]}
            (b.ttft or b.bind("ttft")).observe(ttft, exemplar)
        tpot = ex.time_per_output_token_s
        if tpot is not None:
            (b.tpot or b.bind("tpot")).observe(tpot)
        queue = ex.queue_s
        if queue is not None:
            (b.queue or b.bind("queue")).observe(queue)

    def _usage(self, ex: Exchange, b: Bound) -> None:
        usage = ex.usage
        if usage is None:
            if self._usage_expected(ex):
                (b.usage_missing or b.bind("usage_missing")).value += 1.0
            return
        values = (
            usage.input,
            usage.output,
            usage.cache_hit,
            usage.cache_miss,
            usage.reasoning,
            usage.cache_write,
        )
        tokens = b.tokens
        for kind, value in zip(TOKEN_TYPES, values, strict=True):
            if value:
                (tokens.get(kind) or b.keyed("tokens", kind)).inc(value)
        if usage.input is not None:
            (b.input_tokens or b.bind("input_tokens")).observe(usage.input)
        if usage.output is not None:
            (b.output_tokens or b.bind("output_tokens")).observe(usage.output)

    @staticmethod
    def _usage_expected(ex: Exchange) -> bool:
        """Usage-carrying route, the request reached the upstream, and no usage came back."""
        if ex.route not in USAGE_ROUTES or ex.sent_at is None or ex.method != "POST":
            return False
        if ex.outcome == Outcome.COMPLETED:
            return ex.status is not None and 200 <= ex.status < 300
        if ex.outcome == Outcome.UPSTREAM_TIMEOUT:
            return ex.response_started_at is not None  # a 504 before any byte: nothing billed
        return ex.outcome in (Outcome.CLIENT_DISCONNECTED, Outcome.UPSTREAM_ABORTED)

    @staticmethod
    def _limits(ex: Exchange, b: Bound) -> None:
        limits = ex.limits
        if limits.retry_after_s is not None:
            (b.retry_after or b.bind("retry_after")).observe(limits.retry_after_s)
        if limits.reported_concurrency_limit is not None:
            (b.reported_limit or b.bind("reported_limit")).set(limits.reported_concurrency_limit)
        for resource, value in limits.limit.items():
            (b.ratelimit_limit.get(resource) or b.keyed("ratelimit_limit", resource)).set(value)
        for resource, value in limits.remaining.items():
            series = b.ratelimit_remaining.get(resource)
            (series or b.keyed("ratelimit_remaining", resource)).set(value)
        for resource, value in limits.reset_s.items():
            (b.ratelimit_reset.get(resource) or b.keyed("ratelimit_reset", resource)).set(value)
