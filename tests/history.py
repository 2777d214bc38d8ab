"""Four weeks of synthetic sidecar series, as OpenMetrics for ``promtool tsdb create-blocks-from``.

Capacity queries (forecasts, peak-hour profiles, month-end projections) only mean something over
weeks, and a test can only say what they should return when the data comes from a known model.
So demand here is analytic: a linear growth trend times a daily and a weekly cycle times a little
seeded noise, with a 429 storm two days before the end and DeepSeek's off-peak discount ending two
weeks before it. ``History`` keeps every counter it wrote, so tests compare query results with
exact increases, and with the trend the generator was built from.

Series the capacity dashboard and the SLO rules read over weeks are written every 10 minutes for
28 days; every other series of ``SPECS`` only for the last two hours, every 30 seconds (enough
for ``rate(...[1m])``), which keeps the file small and ``promtool`` fast.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.utils import floatToGoString as _go_float

from sidecar.telemetry.specs import SPECS, Spec

DAY = 86400
DAYS = 28
LONG_STEP_S = 600
TAIL_S = 7200
TAIL_STEP_S = 30
UPSTREAM = "deepseek"

BASE_RPS = 2.0  # mean arrival rate on day 0, before the daily and weekly cycles
GROWTH_PER_DAY = 0.02  # linear: +2% of day 0's demand per day
DAILY_AMPLITUDE = 0.6  # 1 + 0.6 cos(...): peak 1.6 at 05:00 UTC (13:00 in Beijing)
PEAK_HOUR_UTC = 5
WEEKEND_FACTOR = 0.6
PEAK_FACTOR = 1 + DAILY_AMPLITUDE  # weekday peak over the trend
NOISE = 0.05
BASE_429, BASE_5XX, STORM_429 = 0.003, 0.001, 0.4
STORM_START_S, STORM_LENGTH_S = 2 * DAY + 2 * 3600, 2 * 3600  # before the end
PRICE_CHANGE_S = 14 * DAY  # before the end: the off-peak discount ends
OFF_PEAK = (16 * 3600 + 1800, 30 * 60)  # 16:30-00:30 UTC at half price, before the change
TTFT_MEDIAN_S, TTFT_SIGMA = 1.5, 0.924  # 98% of first tokens within 10 s
SLO_BUCKET = 10.0
CONFIGURED = {"concurrency": 250, "requests_per_minute": 600, "tokens_per_minute": 2_000_000}
REPORTED_CONCURRENCY = 200
RUNWAY_DAYS = 15  # the balance at the end lasts this long at the last week's spend


@dataclass(frozen=True)
class Model:
    name: str
    share: float
    duration_s: float
    input_tokens: float
    output_tokens: float
    hit_ratio: float
    usd_per_m: tuple[float, float, float]  # cache hit, cache miss, output


MODELS = (
    Model("deepseek-v4-flash", 0.8, 20.0, 3000, 400, 0.6, (0.028, 0.28, 0.42)),
    Model("deepseek-v4-pro", 0.2, 60.0, 6000, 1200, 0.4, (0.07, 0.56, 1.68)),
)
MEAN_DURATION_S = sum(m.share * m.duration_s for m in MODELS)
CODES = ("200", "429", "503")


def floatToGoString(value: float) -> str:
    """``le`` as the client library writes it (``10.0``, ``+Inf``), typed."""
    text: str = _go_float(value)  # type: ignore[no-untyped-call]
    return text


def lognormal_cdf(x: float, median: float, sigma: float) -> float:
    return 0.5 * (1 + math.erf(math.log(x / median) / (sigma * math.sqrt(2))))


Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]


class History:
    """The series of one upstream over ``DAYS`` days up to ``now`` (Unix seconds)."""

    def __init__(self, now: int, seed: int = 11) -> None:
        # ``end`` anchors the long grid and what tests expect; the 30-second tail runs on to
        # ``now`` so that a Prometheus started a moment later still finds minute-old samples.
        self.end = now - now % LONG_STEP_S
        self.start = self.end - DAYS * DAY
        tail_from = self.end - TAIL_S
        self.grid = [*range(self.start, tail_from, LONG_STEP_S)]
        self.grid += range(tail_from, now - now % TAIL_STEP_S + 1, TAIL_STEP_S)
        if self.grid[-1] != now:
            # A last sample at ``now`` itself: whatever ``now % TAIL_STEP_S`` was, a 1-minute
            # rate evaluated in the next 30 s finds two samples.
            self.grid.append(now)
        rng = random.Random(seed)
        self._noise = [1 + NOISE * rng.uniform(-1, 1) for _ in range(DAYS * DAY // 600 + 2)]
        self.counters: dict[Key, list[float]] = {}
        self.gauges: dict[Key, list[float]] = {}
        self.long: set[Key] = set()
        self._build()

    # The demand model.
    def trend(self, t: float) -> float:
        return 1 + GROWTH_PER_DAY * (t - self.start) / DAY

    def seasonal(self, t: float) -> float:
        hours = (t % DAY) / 3600
        daily = 1 + DAILY_AMPLITUDE * math.cos(2 * math.pi * (hours - PEAK_HOUR_UTC) / 24)
        weekday = (int(t // DAY) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        return daily * (WEEKEND_FACTOR if weekday >= 5 else 1.0)

    def arrivals(self, t: float) -> float:
        """Requests per second at ``t``; noise is constant within each 10 minutes."""
        noise = self._noise[int(t - self.start) // 600]
        return BASE_RPS * self.trend(t) * self.seasonal(t) * noise

    def error_shares(self, t: float) -> dict[str, float]:
        storm = self.end - STORM_START_S <= t < self.end - STORM_START_S + STORM_LENGTH_S
        share_429 = STORM_429 if storm else BASE_429
        return {"200": 1 - share_429 - BASE_5XX, "429": share_429, "503": BASE_5XX}

    def price_multiplier(self, t: float) -> float:
        if t >= self.end - PRICE_CHANGE_S:
            return 1.0
        second = t % DAY
        return 0.5 if second >= OFF_PEAK[0] or second < OFF_PEAK[1] else 1.0

    # What the generator implies, for the tests.
    def expected_peak_concurrency(self, t: float) -> float:
        return BASE_RPS * MEAN_DURATION_S * PEAK_FACTOR * self.trend(t)

    def days_until(self, limit: float, peak_per_trend: float) -> float:
        """Days after ``end`` until the peak (``peak_per_trend`` x trend) reaches ``limit``."""
        trend_needed = limit / peak_per_trend
        return (trend_needed - self.trend(self.end)) / GROWTH_PER_DAY

    def increase(self, name: str, since: int, until: int | None = None, **match: str) -> float:
        """Sum of the increases of ``name``'s counters matching ``match`` between two grid times."""
        until = self.end if until is None else until
        a, b = self.grid.index(since), self.grid.index(until)
        total = 0.0
        for (series, labels), values in self.counters.items():
            if series == name and all((k, v) in labels for k, v in match.items()):
                total += values[b] - values[a]
        return total

    def gauge(self, name: str, at: int) -> float:
        (values,) = [v for (series, _), v in self.gauges.items() if series == name]
        return values[self.grid.index(at)]

    # Building the series.
    def _counter(self, name: str, long: bool, **labels: str) -> Callable[[float], None]:
        key: Key = (name, tuple(labels.items()))
        values = self.counters.setdefault(key, [0.0])
        if long:
            self.long.add(key)
        return lambda delta: values.append(values[-1] + delta)

    def _gauge(self, name: str, long: bool, fn: Callable[[float], float], **labels: str) -> None:
        key: Key = (name, tuple(labels.items()))
        self.gauges[key] = [fn(t) for t in self.grid]
        if long:
            self.long.add(key)

    def _build(self) -> None:
        steps: list[tuple[Callable[[float], None], Callable[[float, float], float]]] = []

        def add(
            name: str, long: bool, per_step: Callable[[float, float], float], **kw: str
        ) -> None:
            steps.append((self._counter(name, long, upstream=UPSTREAM, **kw), per_step))

        for m in MODELS:
            self._model(m, add)
        for t0, t1 in zip(self.grid, self.grid[1:], strict=False):
            mid, dt = (t0 + t1) / 2, t1 - t0
            requests = self.arrivals(mid) * dt
            for append, per_step in steps:
                append(per_step(mid, requests))
        concurrency = lambda t: self.arrivals(t) * MEAN_DURATION_S  # noqa: E731 - Little's law
        self._gauge(
            "llm_in_flight_requests", True, concurrency, upstream=UPSTREAM, route="chat_completions"
        )
        for resource, value in CONFIGURED.items():
            self._gauge(
                "llm_ratelimit_configured",
                True,
                lambda _, v=value: v,
                upstream=UPSTREAM,
                resource=resource,
            )
        self._gauge(
            "llm_upstream_concurrency_limit",
            True,
            lambda _: REPORTED_CONCURRENCY,
            upstream=UPSTREAM,
            source="reported",
        )
        self._gauge("llm_account_available", True, lambda _: 1, upstream=UPSTREAM)
        self._balance()
        self._background()

    def _model(self, m: Model, add: Callable[..., None]) -> None:
        """Requests, durations, first tokens, tokens, cost and savings of one model."""
        ok = lambda t, n: n * m.share * self.error_shares(t)["200"]  # noqa: E731
        base = {"route": "chat_completions", "model": m.name}
        for code in CODES:
            share = lambda t, n, c=code: n * m.share * self.error_shares(t)[c]  # noqa: E731
            add(
                "llm_requests_total",
                True,
                share,
                **base,
                stream="true",
                code=code,
                outcome="completed",
            )
        name = "llm_request_duration_seconds"
        add(name + "_count", True, lambda t, n: n * m.share, **base, stream="true")
        add(name + "_sum", True, lambda t, n: n * m.share * m.duration_s, **base, stream="true")
        median = m.duration_s / math.exp(0.6**2 / 2)
        for le in (*_buckets(name), math.inf):
            cdf = lognormal_cdf(le, median, 0.6) if le != math.inf else 1.0
            add(
                name + "_bucket",
                False,
                lambda t, n, c=cdf: n * m.share * c,
                **base,
                stream="true",
                le=floatToGoString(le),
            )
        name = "llm_time_to_first_token_seconds"
        add(name + "_count", True, ok, **base)
        add(name + "_sum", False, lambda t, n: ok(t, n) * TTFT_MEDIAN_S, **base)
        for le in (*_buckets(name), math.inf):
            cdf = lognormal_cdf(le, TTFT_MEDIAN_S, TTFT_SIGMA) if le != math.inf else 1.0
            add(
                name + "_bucket",
                le == SLO_BUCKET,
                lambda t, n, c=cdf: ok(t, n) * c,
                **base,
                le=floatToGoString(le),
            )
        hit, miss = m.input_tokens * m.hit_ratio, m.input_tokens * (1 - m.hit_ratio)
        tokens = {
            "input": m.input_tokens,
            "output": m.output_tokens,
            "cache_hit": hit,
            "cache_miss": miss,
        }
        for kind, per_request in tokens.items():
            add(
                "llm_tokens_total",
                True,
                lambda t, n, k=per_request: ok(t, n) * k,
                model=m.name,
                type=kind,
            )
        hit_usd, miss_usd, out_usd = (p / 1e6 for p in m.usd_per_m)
        usd = {
            "cache_hit": hit * hit_usd,
            "cache_miss": miss * miss_usd,
            "output": m.output_tokens * out_usd,
        }
        for kind, per_request in usd.items():
            add(
                "llm_cost_usd_total",
                True,
                lambda t, n, u=per_request: ok(t, n) * u * self.price_multiplier(t),
                model=m.name,
                type=kind,
            )
        saved = hit * (miss_usd - hit_usd)
        add(
            "llm_cache_savings_usd_total",
            True,
            lambda t, n: ok(t, n) * saved * self.price_multiplier(t),
            model=m.name,
        )

    def _balance(self) -> None:
        """USD balance: falls with spend, one top-up 18 days before the end."""
        spend = [
            sum(values)
            for values in zip(
                *(v for (n, _), v in self.counters.items() if n == "llm_cost_usd_total"),
                strict=True,
            )
        ]
        at = spend[self.grid.index(self.end)]
        last_week = at - spend[self.grid.index(self.end - 7 * DAY)]
        at_end = RUNWAY_DAYS * last_week / 7
        top_up_at, top_up = self.end - 18 * DAY, at / 2
        balance = {
            t: at_end + at - s - (top_up if t < top_up_at else 0)
            for t, s in zip(self.grid, spend, strict=True)
        }
        self._gauge(
            "llm_account_balance", True, balance.__getitem__, upstream=UPSTREAM, currency="USD"
        )

    def _background(self) -> None:
        """Every other metric of SPECS, for the last two hours, so that every query has data."""
        modelled = {_family_of(name) for name, _ in (*self.counters, *self.gauges)}
        tail = self.grid.index(self.end - TAIL_S)
        for spec in SPECS:
            if spec.name.removesuffix("_total") in modelled:
                continue
            labels = {label: BACKGROUND_LABELS.get(label, "x") for label in spec.labels}
            if spec.kind == "gauge":
                value = BACKGROUND_GAUGES.get(spec.name, 1.0)
                value = value + self.end if spec.name.endswith("timestamp_seconds") else value
                self._gauge(spec.name, False, lambda _, v=value: v, **labels)
                continue
            for name, slope, extra in _background_samples(spec):
                values = self.counters.setdefault((name, tuple({**labels, **extra}.items())), [])
                values.extend(
                    0.0 if i < tail else slope * (t - self.grid[tail])
                    for i, t in enumerate(self.grid)
                )

    # Writing.
    def samples(self) -> Iterator[str]:
        """OpenMetrics lines: families together, each series in time order, then ``# EOF``."""
        series = {**self.counters, **self.gauges}
        tail = self.grid.index(self.end - TAIL_S)
        for family, kind in _families(series):
            yield f"# TYPE {family} {kind}\n"
            for (name, labels), values in series.items():
                if _family_of(name) != family:
                    continue
                text = ",".join(f'{k}="{v}"' for k, v in labels)
                first = 0 if (name, labels) in self.long else tail
                grid = self.grid if (name, labels) in self.long else self.grid[tail:]
                for t, value in zip(grid, values[first:], strict=True):
                    yield f"{name}{{{text}}} {value!r} {t}\n"
        yield "# EOF\n"

    def write(self, path: Path) -> None:
        with path.open("w") as out:
            out.writelines(self.samples())


BACKGROUND_LABELS = {
    "upstream": UPSTREAM, "route": "chat_completions", "model": MODELS[0].name, "stream": "true",
    "code": "200", "outcome": "completed", "type": "input", "kind": "sse", "source": "reported",
    "resource": "requests", "currency": "USD", "version": "0.1.0", "python": "3.12.0",
    "backend": "redis", "scope": "local", "signal": "spans", "from": UPSTREAM, "to": "backup",
    "reason": "429",
}  # fmt: skip
BACKGROUND_GAUGES = {
    "llm_model_retirement_timestamp_seconds": 20.0 * DAY,
    "llm_ratelimit_limit": 100.0,
}


def _buckets(name: str) -> tuple[float, ...]:
    (spec,) = [s for s in SPECS if s.name == name]
    return spec.buckets


def _background_samples(spec: Spec) -> list[tuple[str, float, dict[str, str]]]:
    """(series name, increase per second, extra labels) of a counter or histogram."""
    if spec.kind == "counter":
        return [(spec.name, 0.1, {})]
    middle = spec.buckets[len(spec.buckets) // 2]
    out: list[tuple[str, float, dict[str, str]]] = [
        (spec.name + "_count", 0.1, {}),
        (spec.name + "_sum", 0.1 * middle, {}),
    ]
    for le in (*spec.buckets, math.inf):
        out.append(
            (spec.name + "_bucket", 0.1 if le >= middle else 0.0, {"le": floatToGoString(le)})
        )
    return out


def _family_of(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_total"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _families(series: dict[Key, list[float]]) -> list[tuple[str, str]]:
    kinds = {spec.name.removesuffix("_total"): spec.kind for spec in SPECS}
    return sorted({(_family_of(name), kinds[_family_of(name)]) for name, _ in series})
