"""``Metrics.record`` with series bound once per label set writes exactly what it always wrote.

``fixtures/record_binding.om.gz`` is the OpenMetrics exposition that the per-series lookups
(the code before binding) produced for the exchanges of ``one``, with the values that depend on
the clock (``_created``, exemplar timestamps) and on the build (version, Python) blanked out.
Same series, same order, same values, same exemplars: a binding that created a series too
early, too late or under the wrong labels changes this text. Gzipped: 5,000 lines, 570 kB.
"""

from __future__ import annotations

import gzip
import re
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.openmetrics.exposition import generate_latest

from sidecar.exchange import Cost, Exchange, Outcome, RateLimits, Usage
from sidecar.telemetry.labels import ROUTES, ModelLabels
from sidecar.telemetry.metrics import Metrics

GOLDEN = Path(__file__).parent / "fixtures" / "record_binding.om.gz"
MODELS = ("deepseek-chat", "deepseek-reasoner", None, "team-a", "team-b", "over-the-cap", 'q"d')
STATUSES = (200, 429, 500, None, 401)
OUTCOMES = (*Outcome, None)
USAGES = (
    Usage(input=1220, output=12, cache_hit=1152, cache_miss=68),
    None,
    Usage(input=10, output=0, cache_hit=0, cache_miss=10, reasoning=None),
    Usage(input=3209, output=900, cache_hit=3200, cache_miss=9, reasoning=640),
    Usage(input=50, output=7, cache_hit=20, cache_miss=30, cache_write=5),
    Usage(output=1),
)
LIMITS = (
    RateLimits(),
    RateLimits(retry_after_s=2.0, reported_concurrency_limit=8),
    RateLimits(
        limit={"requests": 5000.0, "tokens": 4e6},
        remaining={"requests": 4999.0},
        reset_s={"tokens": 0.006},
    ),
    RateLimits(retry_after_s=0.25),
)


def one(n: int) -> Exchange:
    """The ``n``-th exchange: every field ``record`` reads varies with a different period, so
    the set covers each label combination's first and repeated use."""
    stream = n % 3 > 0
    ex = Exchange(
        request_id=f"req-{n}-" + "x" * (n % 4) * 30,  # some longer than an exemplar allows
        method="GET" if n % 17 == 5 else "POST",
        route=ROUTES[n % len(ROUTES)],
        received_at=0.0,
        started_wall=datetime(2026, 1, 1, tzinfo=UTC),
        upstream=("", "deepseek", "backup")[n % 3 if n % 4 == 0 else 0],
        requested_model=MODELS[n % len(MODELS)],
        stream=stream,
        status=STATUSES[n % len(STATUSES)],
        usage=USAGES[n % len(USAGES)],
        limits=LIMITS[n % len(LIMITS)],
        attempt_codes=[str(STATUSES[n % len(STATUSES)] or 499)] * (1 + n % 3),
        prior_attempts=[("deepseek", "503")] if n % 8 == 4 else [],
        fallbacks=[("deepseek", "backup", "5xx")] if n % 8 == 4 else [],
        guard_wait_s=0.003 * (n % 5) if n % 2 else None,
        parse_error=(None, "sse", "json", None, "oversize")[n % 5],
        cost=Cost(0.001 * n, 0.002, 0.0003 * (n % 4), 0.0005) if n % 6 else None,
        unpriced=n % 6 == 0,
    )
    if n % 9:  # some exchanges never reached the upstream
        ex.body_read_at, ex.sent_at = 0.001, 0.001 + 0.0001 * (n % 7)
        ex.response_started_at = 0.05 * (n % 3) if n % 10 else None
    if stream and n % 4:
        ex.first_data_at = 0.2 + n % 7
        ex.first_token_at = 0.3 + n % 7
        ex.last_token_at = 1.0 + n % 11
        ex.saw_queue_signal = n % 2 == 0
        ex.response_requested_at = 0.1 if ex.route == "realtime" else None
    outcome = OUTCOMES[(n // 2) % len(OUTCOMES)]
    if outcome is not None:  # None: recorded without an ending, no duration
        ex.finish(outcome, 2.0 + n % 13)
    return ex


def recorded(exchanges: int = 150) -> CollectorRegistry:
    """A fresh sidecar's metrics after ``exchanges`` exchanges, started, some moved, recorded."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, "deepseek", ModelLabels(("deepseek-chat", "deepseek-reasoner"), 3))
    for collector in list(registry._collector_to_names):
        if isinstance(collector, ProcessCollector):  # changes between two scrapes
            registry.unregister(collector)
    for n in range(exchanges):
        ex = one(n)
        metrics.started(ex.route)
        if ex.upstream == "backup":
            metrics.moved(ex.route, "deepseek", "backup")
        metrics.record(ex)
    return registry


def normalized(exposition: bytes) -> str:
    """The exposition without what depends on the clock or the build."""
    text = exposition.decode()
    text = re.sub(r"(_created\{[^}]*\}|_created) \S+", r"\1 T", text)
    text = re.sub(r"(# \{[^}]*\} \S+) \S+", r"\1 T", text)  # an exemplar's timestamp
    return re.sub(r"llm_sidecar_build_info\{[^}]*\}", "llm_sidecar_build_info{B}", text)


def test_the_exposition_is_what_per_series_lookups_produced() -> None:
    got = normalized(generate_latest(recorded()))
    want = gzip.decompress(GOLDEN.read_bytes()).decode()
    assert got.count("\n") == want.count("\n")
    for number, (mine, theirs) in enumerate(
        zip(got.splitlines(), want.splitlines(), strict=True), 1
    ):
        assert mine == theirs, f"line {number}"


def test_started_then_recorded_leaves_nothing_in_flight() -> None:
    registry = recorded()
    for upstream in ("deepseek", "backup"):
        for route in ROUTES:
            value = registry.get_sample_value(
                "llm_in_flight_requests", {"upstream": upstream, "route": route}
            )
            assert value in (None, 0.0), (upstream, route)


if __name__ == "__main__":  # regenerate the golden file (only from code known to be right)
    GOLDEN.write_bytes(gzip.compress(normalized(generate_latest(recorded())).encode(), 9, mtime=0))
