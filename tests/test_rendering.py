"""The sliced renderer writes exactly the bytes prometheus_client writes, in every format."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import partial

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Info,
    Metric,
    ProcessCollector,
    Summary,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from sidecar.exchange import Cost, Exchange, Outcome, Usage
from sidecar.settings import DEFAULT_MODELS
from sidecar.telemetry.labels import ROUTES, ModelLabels
from sidecar.telemetry.metrics import Metrics
from sidecar.telemetry.rendering import Unsupported, pieces

Encoder = Callable[[CollectorRegistry], bytes]
# Model names that need escaping in a label value.
ODD_MODELS = ('quote"d', "back\\slash", "new\nline")
FORMATS: dict[str, tuple[bool, Encoder]] = {
    "text 0.0.4": (False, generate_latest),
    "text 1.0.0 allow-utf-8": (False, partial(generate_latest, escaping=openmetrics.ALLOWUTF8)),
    "openmetrics": (True, partial(openmetrics.generate_latest, version="1.0.0")),
    "openmetrics allow-utf-8": (
        True,
        partial(openmetrics.generate_latest, escaping=openmetrics.ALLOWUTF8, version="1.0.0"),
    ),
}


def exchange(n: int, route: str, model: str | None, stream: bool, status: int) -> Exchange:
    """A finished exchange that touches every histogram (stream timings, queueing, usage)."""
    ex = Exchange(
        request_id=f"req-{n}",
        method="POST",
        route=route,
        received_at=0.0,
        started_wall=datetime.now(UTC),
        requested_model=model,
        stream=stream,
        sent_at=0.002,
        body_read_at=0.001,
        response_started_at=0.1,
        first_data_at=0.2 + n % 7,
        first_token_at=0.3 + n % 7,
        last_token_at=1.0 + n % 11,
        saw_queue_signal=True,
        status=status,
        usage=Usage(input=1000 + n, output=20 + n, cache_hit=900, cache_miss=100 + n, reasoning=3),
        cost=Cost(0.001, 0.002, 0.003, 0.0005),
        attempt_codes=[str(status)],
    )
    ex.finish(Outcome.COMPLETED if n % 5 else Outcome.CLIENT_DISCONNECTED, 2.0 + n % 13)
    return ex


def sidecar_registry(exchanges: int = 60) -> tuple[CollectorRegistry, Metrics]:
    """The sidecar's metrics after ``exchanges`` varied exchanges, without the process metrics
    (they change between two renderings)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, "deepseek", ModelLabels((*DEFAULT_MODELS, *ODD_MODELS), 3))
    for collector in list(registry._collector_to_names):
        if isinstance(collector, ProcessCollector):
            registry.unregister(collector)
    models = [*DEFAULT_MODELS, *ODD_MODELS, "team-a", "team-b", "team-c", "team-d", None]
    for n in range(exchanges):
        ex = exchange(n, ROUTES[n % len(ROUTES)], models[n % len(models)], n % 3 > 0, 200)
        metrics.record(ex)
    metrics.record(exchange(99, "chat_completions", "deepseek-chat", True, 429))
    return registry, metrics


class Stamped(Collector):
    """A custom collector with timestamps, a unit and an exemplar-free counter."""

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily("queue_depth_bytes", "Depth.", labels=["q"], unit="bytes")
        gauge.add_metric(["a"], 3.5, timestamp=1764850123.25)
        gauge.add_metric(["b"], 0.0)
        yield gauge


def mixed_registry() -> CollectorRegistry:
    """Every metric type prometheus_client offers, with labels and without."""
    registry, _ = sidecar_registry(20)
    summary = Summary("job_seconds", "Job time.", ["job"], registry=registry)
    summary.labels("x").observe(1.5)
    Summary("plain_seconds", "No labels.", registry=registry).observe(0.25)
    Info("build", "Build facts.", registry=registry).info({"version": "1.2", "commit": 'a"b'})
    Enum("phase", "Phase.", ["who"], states=["on", "off"], registry=registry).labels("me").state(
        "off"
    )
    Gauge("temperature", "Help with \\ and\nnewline.", ["room"], unit="celsius", registry=registry)
    counter = Counter("hits", "Hits.", ["path"], registry=registry)
    counter.labels("/").inc(2, exemplar={"trace_id": "abc"})
    counter.labels("/x")
    registry.register(Stamped())
    return registry


def render(registry: CollectorRegistry, is_openmetrics: bool) -> bytes:
    return "".join(pieces(registry, is_openmetrics)).encode()


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("build", [lambda: sidecar_registry()[0], mixed_registry])
def test_same_bytes_as_prometheus_client(name: str, build: Callable[[], CollectorRegistry]) -> None:
    is_openmetrics, encoder = FORMATS[name]
    registry = build()
    assert render(registry, is_openmetrics) == encoder(registry)
    Counter("late", "Registered after a rendering.", ["k"], registry=registry).labels("v").inc()
    for collector in list(registry._collector_to_names):
        if isinstance(collector, Counter) and collector._labelnames == ("path",):
            collector.labels("/").inc(5)
    assert render(registry, is_openmetrics) == encoder(registry)  # with the prefixes kept


def test_every_labelled_series_of_the_sidecar_takes_the_fast_path() -> None:
    registry, metrics = sidecar_registry()
    render(registry, True)
    children = metrics._children.values()
    assert len(children) > 100
    assert all(getattr(child, "_sidecar_line_prefixes", None) for child in children)


@pytest.mark.parametrize("is_openmetrics", [False, True])
def test_what_it_cannot_reproduce_is_refused(is_openmetrics: bool) -> None:
    colon = CollectorRegistry()
    Counter("job:requests", "Recording-rule style name.", ["k"], registry=colon).labels("v")
    target = CollectorRegistry(target_info={"env": "prod"})
    for registry in (colon, target):
        with pytest.raises(Unsupported):
            render(registry, is_openmetrics)
