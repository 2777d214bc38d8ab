"""Dropped-item accounting for OpenTelemetry export: ``llm_sidecar_otel_dropped_total``.

The SDK's batch processor drops silently when its queue is full, and an exporter's failure is
only logged; here every item handed to export is, in the end, either delivered or counted
dropped, exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult


class DropLedger:
    """Every item handed to a signal's exporter is, in the end, either delivered or counted
    dropped, exactly once. Bounds the queue itself (the SDK's drops silently), and counts
    failed exports and whatever is still pending when export shuts down."""

    def __init__(self, capacity: int, on_drop: Callable[[int], None]) -> None:
        self._lock = threading.Lock()
        self._capacity = capacity
        self._pending = 0  # queued in the SDK or being exported
        self._closed = False
        self._on_drop = on_drop

    def admit(self, count: int = 1) -> bool:
        with self._lock:
            if self._closed or self._pending + count > self._capacity:
                self._on_drop(count)
                return False
            self._pending += count
            return True

    def settled(self, count: int, delivered: bool) -> None:
        with self._lock:
            if self._closed:
                return  # already counted when export shut down
            self._pending -= count
            if not delivered:
                self._on_drop(count)

    def close(self) -> None:
        with self._lock:
            if not self._closed and self._pending:
                self._on_drop(self._pending)
            self._pending = 0
            self._closed = True


class CountingSpanExporter(OTLPSpanExporter):
    """The official exporter, reporting each batch's fate to the ledger."""

    def __init__(self, ledger: DropLedger, endpoint: str, timeout_s: float) -> None:
        super().__init__(endpoint=endpoint, timeout=timeout_s)
        self._ledger = ledger

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = SpanExportResult.FAILURE
        try:
            result = super().export(spans)
        finally:
            self._ledger.settled(len(spans), result is SpanExportResult.SUCCESS)
        return result


class CountingMetricExporter(OTLPMetricExporter):
    """The official exporter; data points of a failed export are counted dropped."""

    def __init__(self, ledger: DropLedger, endpoint: str, timeout_s: float) -> None:
        super().__init__(endpoint=endpoint, timeout=timeout_s)
        self._ledger = ledger

    def export(
        self, metrics_data: MetricsData, timeout_millis: float | None = 10_000, **kwargs: object
    ) -> MetricExportResult:
        points = sum(
            len(metric.data.data_points)
            for rm in metrics_data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        )
        if not self._ledger.admit(points):
            return MetricExportResult.FAILURE
        result = MetricExportResult.FAILURE
        try:
            result = super().export(metrics_data, timeout_millis, **kwargs)
        finally:
            self._ledger.settled(points, result is MetricExportResult.SUCCESS)
        return result
