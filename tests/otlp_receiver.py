"""A real OTLP/HTTP receiver for tests: an aiohttp server decoding protobuf exports.

It accepts ``POST /v1/traces`` and ``POST /v1/metrics`` as a collector does, decodes them with
``opentelemetry-proto``, and keeps what arrived. ``hang`` (an ``asyncio.Event``) holds every
answer back until it is set: a collector that accepts connections and never replies.
"""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

PROTOBUF = "application/x-protobuf"


def value_of(value: AnyValue) -> Any:
    """An ``AnyValue`` as the Python value it carries (arrays as tuples)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value_of(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.resources: list[dict[str, Any]] = []
        self.metrics: list[Metric] = []
        self.requests = 0  # export requests that arrived, answered or not
        self.hang: asyncio.Event | None = None
        self._arrived = asyncio.Condition()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        return app

    async def wait_spans(self, count: int) -> list[Span]:
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.spans) >= count)
        return self.spans

    async def wait_requests(self, count: int) -> None:
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.requests >= count)

    async def _body(self, request: web.Request) -> bytes:
        body = await request.read()
        async with self._arrived:
            self.requests += 1
            self._arrived.notify_all()
        if self.hang is not None:
            await self.hang.wait()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body

    async def _traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await self._body(request))
        async with self._arrived:
            for resource_spans in export.resource_spans:
                self.resources.append(attributes(resource_spans.resource.attributes))
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
            self._arrived.notify_all()
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type=PROTOBUF)

    async def _metrics(self, request: web.Request) -> web.Response:
        export = ExportMetricsServiceRequest.FromString(await self._body(request))
        async with self._arrived:
            for resource_metrics in export.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    self.metrics.extend(scope_metrics.metrics)
            self._arrived.notify_all()
        body = ExportMetricsServiceResponse().SerializeToString()
        return web.Response(body=body, content_type=PROTOBUF)

    def histogram(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """The last export's data points of a histogram, with their attributes (cumulative
        temporality: the last export holds the totals)."""
        found = [m for m in self.metrics if m.name == name]
        if not found:
            return []
        return [(attributes(p.attributes), p) for p in found[-1].histogram.data_points]
