"""Parse Prometheus exposition text and compute the view's numbers. Pure: no I/O, no clock.

Rates come from two scrapes (counter resets count from zero); quantiles are interpolated inside
histogram buckets the way PromQL's ``histogram_quantile`` does, over the window between the two
scrapes when it saw observations, else over everything since the sidecar started.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]


@dataclass(frozen=True)
class Scrape:
    """All samples of one or more scrapes, summed, taken at monotonic time ``at``."""

    at: float
    samples: dict[Key, float]

    def select(self, name: str, **match: str) -> list[tuple[dict[str, str], float]]:
        """Samples of ``name`` whose labels include ``match``."""
        out = []
        for (sample_name, labels), value in self.samples.items():
            if sample_name != name:
                continue
            label_map = dict(labels)
            if all(label_map.get(k) == v for k, v in match.items()):
                out.append((label_map, value))
        return out

    def has(self, name: str) -> bool:
        return any(sample_name == name for sample_name, _ in self.samples)

    def total(self, name: str, **match: str) -> float:
        return sum(value for _, value in self.select(name, **match))

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for labels, value in self.select(name, **match):
            out[labels.get(label, "")] += value
        return dict(out)


def parse(text: str) -> dict[Key, float]:
    """Samples of an exposition text; ``_created`` timestamps are dropped."""
    samples: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


# States, not amounts: two open breakers are not "2" (half-open). The highest state is shown.
NOT_SUMMED = frozenset({"llm_upstream_circuit_state"})


def merge(at: float, parts: Iterable[dict[Key, float]]) -> Scrape:
    """Sum several sidecars' samples into one scrape (``top`` with several URLs)."""
    total: dict[Key, float] = defaultdict(float)
    for part in parts:
        for key, value in part.items():
            if key[0] in NOT_SUMMED:
                total[key] = max(total[key], value)
            else:
                total[key] += value
    return Scrape(at=at, samples=dict(total))


def increase(prev: float | None, cur: float) -> float:
    """Counter increase; a drop means the process restarted, so everything is new."""
    if prev is None:
        return cur
    return cur - prev if cur >= prev else cur


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative buckets {upper bound: count}; None when empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def buckets_of(scrape: Scrape, name: str, **match: str) -> dict[float, float]:
    """Cumulative bucket counts of histogram ``name`` summed over the other labels."""
    out: dict[float, float] = defaultdict(float)
    for labels, value in scrape.select(f"{name}_bucket", **match):
        out[float(labels["le"])] += value
    return dict(out)


def window_buckets(prev: Scrape | None, cur: Scrape, name: str, **match: str) -> dict[float, float]:
    """Buckets observed between the scrapes, or all of them when the window saw nothing."""
    now = buckets_of(cur, name, **match)
    if prev is None:
        return now
    before = buckets_of(prev, name, **match)
    delta = {le: increase(before.get(le), count) for le, count in now.items()}
    return delta if delta and max(delta.values()) > 0 else now


@dataclass
class ModelRow:
    """One model's line in the view; None means "not known yet" (shown as a dash)."""

    model: str
    requests: float
    requests_per_min: float | None
    tokens_per_min: float | None
    rate_limited: float
    ttft_p50: float | None
    ttft_p95: float | None
    queue_p50: float | None
    queue_p95: float | None
    cache_hit_ratio: float | None
    spend_per_hour: float | None
    savings_per_hour: float | None


@dataclass
class UpstreamRow:
    """One upstream when fallback is configured: its breaker and the traffic it answers."""

    name: str
    circuit_state: int | None  # 0 closed, 1 open, 2 half-open; None when not reported
    requests_per_min: float | None


@dataclass
class View:
    """Everything the terminal view shows for one refresh."""

    window_s: float | None
    in_flight: float
    limit: float | None
    limit_source: str
    requests: float
    rate_limited: float
    spend_total: float | None
    savings_total: float | None
    rows: list[ModelRow] = field(default_factory=list)
    upstreams: list[UpstreamRow] = field(default_factory=list)  # only with fallback configured
    fallbacks: dict[str, float] = field(default_factory=dict)  # since start, by reason


def _rate(prev: Scrape | None, cur: Scrape, per_s: float, name: str, **match: str) -> float | None:
    """Increase of ``name`` per ``per_s`` seconds between the scrapes; None without a window."""
    if prev is None or cur.at <= prev.at:
        return None
    grown = sum(
        increase(prev.samples.get(key), value)
        for key, value in cur.samples.items()
        if key[0] == name and all(dict(key[1]).get(k) == v for k, v in match.items())
    )
    return grown * per_s / (cur.at - prev.at)


def _ratio(prev: Scrape | None, cur: Scrape, model: str) -> float | None:
    """Cache-hit share of prompt tokens, over the window if it saw any, else cumulative."""
    name = "llm_tokens_total"
    for base in (prev, None) if prev is not None else (None,):
        hit = cur.total(name, model=model, type="cache_hit")
        miss = cur.total(name, model=model, type="cache_miss")
        if base is not None:
            hit -= base.total(name, model=model, type="cache_hit")
            miss -= base.total(name, model=model, type="cache_miss")
        if hit + miss > 0 and hit >= 0 and miss >= 0:
            return hit / (hit + miss)
    return None


def _row(prev: Scrape | None, cur: Scrape, model: str) -> ModelRow:
    ttft = window_buckets(prev, cur, "llm_time_to_first_token_seconds", model=model)
    queue = window_buckets(prev, cur, "llm_upstream_queue_seconds", model=model)
    tokens = [
        _rate(prev, cur, 60.0, "llm_tokens_total", model=model, type=kind)
        for kind in ("input", "output")
    ]
    priced = cur.has("llm_cost_usd_total")
    saved = cur.has("llm_cache_savings_usd_total")
    return ModelRow(
        model=model,
        requests=cur.total("llm_requests_total", model=model),
        requests_per_min=_rate(prev, cur, 60.0, "llm_requests_total", model=model),
        tokens_per_min=None if tokens[0] is None else sum(t or 0.0 for t in tokens),
        rate_limited=cur.total("llm_requests_total", model=model, code="429"),
        ttft_p50=quantile(0.5, ttft),
        ttft_p95=quantile(0.95, ttft),
        queue_p50=quantile(0.5, queue),
        queue_p95=quantile(0.95, queue),
        cache_hit_ratio=_ratio(prev, cur, model),
        spend_per_hour=_rate(prev, cur, 3600.0, "llm_cost_usd_total", model=model)
        if priced
        else None,
        savings_per_hour=(
            _rate(prev, cur, 3600.0, "llm_cache_savings_usd_total", model=model) if saved else None
        ),
    )


def concurrency_limit(cur: Scrape) -> tuple[float | None, str]:
    """Configured limit when set, else the one DeepSeek reported in its last 429."""
    configured = cur.total("llm_ratelimit_configured", resource="concurrency")
    if configured > 0:
        return configured, "configured"
    reported = cur.total("llm_upstream_concurrency_limit", source="reported")
    if reported > 0:
        return reported, "reported"
    return None, "unknown"


def upstream_rows(prev: Scrape | None, cur: Scrape) -> list[UpstreamRow]:
    """Breaker state and request rate per upstream; empty when no breaker is exported."""
    states = cur.by("llm_upstream_circuit_state", "upstream")
    if not states:
        return []
    primaries = set(cur.by("llm_fallbacks_total", "from"))
    names = sorted(
        set(states) | set(cur.by("llm_requests_total", "upstream")),
        key=lambda name: (name not in primaries, name),  # the primary first, then its fallbacks
    )
    return [
        UpstreamRow(
            name=name,
            circuit_state=round(states[name]) if name in states else None,
            requests_per_min=_rate(prev, cur, 60.0, "llm_requests_total", upstream=name),
        )
        for name in names
    ]


def compute(prev: Scrape | None, cur: Scrape) -> View:
    """The numbers of one refresh, from the previous scrape (None at start) and this one."""
    models = sorted(m for m, n in cur.by("llm_requests_total", "model").items() if n > 0)
    limit, source = concurrency_limit(cur)
    return View(
        window_s=None if prev is None else cur.at - prev.at,
        in_flight=cur.total("llm_in_flight_requests"),
        limit=limit,
        limit_source=source,
        requests=cur.total("llm_requests_total"),
        rate_limited=cur.total("llm_requests_total", code="429"),
        spend_total=cur.total("llm_cost_usd_total") if cur.has("llm_cost_usd_total") else None,
        savings_total=(
            cur.total("llm_cache_savings_usd_total")
            if cur.has("llm_cache_savings_usd_total")
            else None
        ),
        rows=[_row(prev, cur, model) for model in models],
        upstreams=upstream_rows(prev, cur),
        fallbacks={r: n for r, n in cur.by("llm_fallbacks_total", "reason").items() if n > 0},
    )
