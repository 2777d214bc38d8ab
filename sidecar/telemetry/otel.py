"""OpenTelemetry export (opt-in): one CLIENT span per exchange and the GenAI client metrics.

Imported only when ``--otlp-endpoint`` is set, since the SDK is an optional extra. The relay
never waits for it: spans and metric points go to bounded queues that the SDK's own threads
drain over OTLP/HTTP; whatever a dead or slow collector costs is dropped and counted in
``llm_sidecar_otel_dropped_total{signal}``, and nothing else happens (the SDK's own log lines
are silenced: the counter is the signal).

The span's ids are fixed when the request is forwarded (``trace_context``), because its span
id goes upstream in ``traceparent``; the span itself is written once, when the exchange has
finished (``finished``), with explicit start and end times.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from time import monotonic

from multidict import CIMultiDict
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceFlags, TraceState

from sidecar import __version__
from sidecar.exchange import Exchange, TraceIds
from sidecar.settings import Settings
from sidecar.telemetry.genai import (
    SCHEMA_URL,
    Server,
    error_type,
    metric_attributes,
    span_attributes,
    span_name,
)
from sidecar.telemetry.labels import ModelLabels
from sidecar.telemetry.otel_drops import CountingMetricExporter, CountingSpanExporter, DropLedger
from sidecar.telemetry.otel_options import SERVICE_NAME, OtelOptions
from sidecar.telemetry.specs import DURATION_BUCKETS, LATENCY_BUCKETS, TOKEN_BUCKETS
from sidecar.telemetry.tracecontext import trace_context


class _PresetIds(IdGenerator):
    """Hands the tracer the ids the exchange already sent upstream in ``traceparent``.

    Set immediately before ``start_span`` on the event loop thread, with no await between.
    """

    trace_id = 0
    span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id

    def is_trace_id_random(self) -> bool:
        return True  # trace ids are drawn from os.urandom (W3C "random" flag, 0x02)


class OtelExport:
    """The span and metric pipelines of one sidecar; ``finished`` is called once per exchange."""

    def __init__(
        self,
        settings: Settings,
        options: OtelOptions,
        on_drop: Callable[[str, int], None],
    ) -> None:
        sdk_log = logging.getLogger("opentelemetry")
        if not sdk_log.handlers:  # a handler, so Python's last-resort stderr printer stays quiet
            sdk_log.addHandler(logging.NullHandler())
        # Who answered: the primary, or a fallback (its own host and provider), by upstream label.
        self._servers = {
            settings.upstream_name: Server.of(settings.upstream, settings.upstream_name)
        }
        self._servers.update((fb.name, Server.of(fb.upstream, fb.name)) for fb in settings.fallback)
        self._upstream_name = settings.upstream_name
        self._models = ModelLabels(settings.models, settings.max_models)  # its own cap
        self._shutdown_timeout_s = max(options.traces_timeout_s, options.metrics_timeout_s)
        resource = Resource.create(options.resource)
        self._span_ledger = DropLedger(options.max_queue_size, lambda n: on_drop("spans", n))
        self._ids = _PresetIds()
        self._tracer_provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(ALWAYS_ON),
            id_generator=self._ids,
            shutdown_on_exit=False,  # ``shutdown`` bounds the flush; an atexit hook would not
        )
        span_exporter = CountingSpanExporter(
            self._span_ledger, options.traces_endpoint, options.traces_timeout_s
        )
        self._tracer_provider.add_span_processor(
            BatchSpanProcessor(
                span_exporter,
                max_queue_size=options.max_queue_size,
                schedule_delay_millis=options.schedule_delay_ms,
                max_export_batch_size=options.max_export_batch_size,
            )
        )
        self._tracer = self._tracer_provider.get_tracer(SERVICE_NAME, __version__, SCHEMA_URL)
        # Points are collected, not queued: the bound is one export's worth of series.
        self._metric_ledger = DropLedger(1 << 30, lambda n: on_drop("metrics", n))
        exporter = CountingMetricExporter(
            self._metric_ledger, options.metrics_endpoint, options.metrics_timeout_s
        )
        reader = PeriodicExportingMetricReader(
            exporter, export_interval_millis=options.metric_interval_ms
        )
        self._meter_provider = MeterProvider(
            resource=resource, metric_readers=[reader], shutdown_on_exit=False
        )
        meter = self._meter_provider.get_meter(SERVICE_NAME, __version__, SCHEMA_URL)
        # The Prometheus histograms' buckets, so both exports agree bucket for bucket (the
        # conventions' advice stops at 82 s; DeepSeek may queue a request for 10 minutes).
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._ttft = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of generated content.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )

    def trace_context(self, ex: Exchange, headers: CIMultiDict[str]) -> None:
        """The proxy's hook, called once per exchange before the request is forwarded; a bug
        here leaves the headers as they were and shows in the log line, never in the relay."""
        try:
            trace_context(ex, headers)
        except Exception as exc:
            ex.trace = None
            ex.observer_error = type(exc).__name__

    def finished(self, ex: Exchange) -> None:
        """Write the exchange's span (when sampled) and its GenAI metric points."""
        if ex.trace is not None and ex.trace.sampled and self._span_ledger.admit():
            self._span(ex, ex.trace)
        self._record(ex)

    def _span(self, ex: Exchange, ids: TraceIds) -> None:
        start_ns = int(ex.started_wall.timestamp() * 1e9)
        end_at = ex.ended_at if ex.ended_at is not None else ex.received_at
        context = Context()
        if ids.parent_span_id is not None:
            parent = SpanContext(
                ids.trace_id,
                ids.parent_span_id,
                is_remote=True,
                trace_flags=TraceFlags(ids.flags),
                trace_state=TraceState(list(ids.trace_state)),
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        self._ids.trace_id, self._ids.span_id = ids.trace_id, ids.span_id
        span = self._tracer.start_span(
            span_name(ex),
            context=context,
            kind=SpanKind.CLIENT,
            attributes=span_attributes(ex, self._server(ex), ex.upstream or self._upstream_name),
            start_time=start_ns,
        )
        if error_type(ex) is not None:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=start_ns + round((end_at - ex.received_at) * 1e9))

    def _server(self, ex: Exchange) -> Server:
        return self._servers.get(ex.upstream, self._servers[self._upstream_name])

    def _record(self, ex: Exchange) -> None:
        """The same Exchange fields ``Metrics.record`` observes, so the values match."""
        request = self._models.label(ex.requested_model) if ex.requested_model else None
        response = self._models.label(ex.reported_model) if ex.reported_model else None
        attrs = metric_attributes(ex, self._server(ex), request, response)
        if attrs is None:
            return
        if ex.duration_s is not None:
            error = error_type(ex)
            self._duration.record(ex.duration_s, {**attrs, "error.type": error} if error else attrs)
        if ex.ttft_s is not None:
            self._ttft.record(ex.ttft_s, attrs)
        usage = ex.usage
        if usage is not None:
            for kind, value in (("input", usage.input), ("output", usage.output)):
                if value is not None:
                    self._tokens.record(value, {**attrs, "gen_ai.token.type": kind})

    def shutdown(self) -> None:
        """Flush what is queued, for at most the export timeout; whatever did not leave by
        then is counted dropped. Blocking: call it off the event loop."""
        budget_s = self._shutdown_timeout_s
        workers = [
            threading.Thread(target=self._tracer_provider.shutdown, daemon=True),
            threading.Thread(
                target=self._meter_provider.shutdown, args=(budget_s * 1000,), daemon=True
            ),
        ]  # daemons: a collector that hangs must not hold the process at exit
        for worker in workers:
            worker.start()
        deadline = monotonic() + budget_s + 1.0
        for worker in workers:
            worker.join(max(0.0, deadline - monotonic()))
        self._span_ledger.close()
        self._metric_ledger.close()


def build(
    settings: Settings, environ: Mapping[str, str], on_drop: Callable[[str, int], None]
) -> OtelExport:
    """The export pipelines for ``settings.otlp_endpoint``; bad ``OTEL_*`` values are settings
    errors (one line, exit 2)."""
    assert settings.otlp_endpoint is not None
    return OtelExport(settings, OtelOptions.from_environ(settings.otlp_endpoint, environ), on_drop)
