"""The metric families of one sidecar, built from ``specs.SPECS``; ``record`` is the only writer.

Each ``Metrics`` takes an injected registry, so tests build a fresh ``CollectorRegistry`` and
read exact values.
The series are plain numbers (``series.py``): an exchange's fifteen-odd updates are attribute
increments, not locked prometheus_client children.
"""

from __future__ import annotations

import platform
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector

from sidecar import __version__
from sidecar.exchange import Exchange, Outcome
from sidecar.telemetry.labels import ROUTES, USAGE_ROUTES, ModelLabels
from sidecar.telemetry.series import Family
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
        self._child("llm_in_flight_requests", self.upstream, route).inc()

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
        stream = "true" if ex.stream else "false"
        code = str(ex.status) if ex.status is not None else "499"
        outcome = (ex.outcome or Outcome.COMPLETED).value
        self._child("llm_in_flight_requests", up, route).dec()
        self._child("llm_requests_total", up, route, model, stream, code, outcome).inc()
        exemplar = {"request_id": ex.request_id[:64]}
        if ex.duration_s is not None:
            self._child("llm_request_duration_seconds", up, route, model, stream).observe(
                ex.duration_s, exemplar
            )
        self._timings(ex, model)
        self._usage(ex, model)
        self._limits(ex)
        if ex.overhead_s is not None:
            self._child("llm_sidecar_overhead_seconds", up).observe(ex.overhead_s)
        if ex.parse_error is not None:
            self._child("llm_sidecar_parse_errors_total", up, ex.parse_error).inc()
        for attempt_code in ex.attempt_codes:
            self._child("llm_upstream_attempts_total", up, route, attempt_code).inc()
        for tried, attempt_code in ex.prior_attempts:
            self._child("llm_upstream_attempts_total", tried, route, attempt_code).inc()
        for from_upstream, to_upstream, reason in ex.fallbacks:
            self.fallback(from_upstream, to_upstream, reason)
        if ex.guard_wait_s is not None:
            self._child("llm_sidecar_guard_wait_seconds", up).observe(ex.guard_wait_s)
        self._cost(ex, model)

    def _cost(self, ex: Exchange, model: str) -> None:
        up, cost = ex.upstream or self.upstream, ex.cost
        if ex.unpriced:
            self._child("llm_sidecar_unpriced_requests_total", up, model).inc()
        if cost is None:
            return
        for kind, usd in (
            ("cache_hit", cost.cache_hit_usd),
            ("cache_miss", cost.cache_miss_usd),
            ("output", cost.output_usd),
        ):
            self._child("llm_cost_usd_total", up, model, kind).inc(usd)
        self._child("llm_cache_savings_usd_total", up, model).inc(cost.savings_usd)

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

    def _timings(self, ex: Exchange, model: str) -> None:
        up, route = ex.upstream or self.upstream, ex.route
        if ex.ttft_s is not None:
            self._child("llm_time_to_first_token_seconds", up, route, model).observe(
                ex.ttft_s, {"request_id": ex.request_id[:64]}
            )
        if ex.time_per_output_token_s is not None:
            self._child("llm_time_per_output_token_seconds", up, route, model).observe(
                ex.time_per_output_token_s
            )
        if ex.queue_s is not None:
            self._child("llm_upstream_queue_seconds", up, route, model).observe(ex.queue_s)

    def _usage(self, ex: Exchange, model: str) -> None:
        up = ex.upstream or self.upstream
        usage = ex.usage
        if usage is None:
            if self._usage_expected(ex):
                self._child("llm_usage_missing_total", up, ex.route, model).inc()
            return
        for kind in TOKEN_TYPES:
            value = getattr(usage, kind)
            if value:
                self._child("llm_tokens_total", up, model, kind).inc(value)
        for kind in ("input", "output"):
            value = getattr(usage, kind)
            if value is not None:
                self._child("llm_request_tokens", up, model, kind).observe(value)

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

    def _limits(self, ex: Exchange) -> None:
        up, limits = ex.upstream or self.upstream, ex.limits
        if limits.retry_after_s is not None:
            self._child("llm_retry_after_seconds", up).observe(limits.retry_after_s)
        if limits.reported_concurrency_limit is not None:
            self._child("llm_upstream_concurrency_limit", up, "reported").set(
                limits.reported_concurrency_limit
            )
        for resource, value in limits.limit.items():
            self._child("llm_ratelimit_limit", up, resource).set(value)
        for resource, value in limits.remaining.items():
            self._child("llm_ratelimit_remaining", up, resource).set(value)
        for resource, value in limits.reset_s.items():
            self._child("llm_ratelimit_reset_seconds", up, resource).set(value)
