"""Both dashboards and every rule, run against four weeks of backfilled history.

``tests/history.py`` writes 28 days of series from a known demand model (daily and weekly
cycles, growth, a 429 storm, the end of an off-peak discount); ``promtool`` turns them into TSDB
blocks and a real Prometheus serves them. Forecasts and projections are compared with what the
model implies, other values with the exact increases the generator wrote.
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests import history as gen
from tests.conftest import closed_port, require_binary
from tests.history import DAY, History

ROOT = Path(__file__).parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
CAPACITY = ROOT / "dashboards" / "deepseek-capacity.json"


@dataclass
class Backfilled:
    url: str
    history: History

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr, "time": str(self.history.end if at is None else at)}
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = orjson.loads(response.read())
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str, at: float | None = None) -> float:
        (sample,) = self.query(expr, at)
        return float(sample["value"][1])


def month_to_date(end: int) -> int:
    """Seconds since the first of ``end``'s month (UTC): Grafana's ``$__range`` for ``now/M``."""
    moment = datetime.fromtimestamp(end, UTC)
    return end - int(moment.replace(day=1, hour=0, minute=0, second=0).timestamp())


def grafana(expr: str, end: int) -> str:
    """What Grafana sends for an expression with every variable at "All"."""
    for variable, value in {
        "$upstream": ".*",
        "$model": ".*",
        "$__rate_interval": "2m",
        "$__range": f"{month_to_date(end)}s",
    }.items():
        expr = expr.replace(variable, value)
    return expr


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "prometheus exited"
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)  # polling a readiness endpoint, not waiting for time to pass
    raise AssertionError("prometheus did not become ready")


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backfilled]:
    promtool, prometheus = require_binary("promtool"), require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("history")
    history = History(int(datetime.now(UTC).timestamp()))
    history.write(tmp / "history.om")
    subprocess.run(
        # One parse of the input per block: blocks of up to 29 days, not 336 of 2 hours.
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=700h",
         "--quiet", str(tmp / "history.om"), str(tmp / "data")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    # The rules as written, evaluated every second so that recorded series appear at once.
    rules = re.sub(r"(?m)^(\s+interval:) \S+$", r"\1 1s", RULES.read_text())
    (tmp / "rules.yml").write_text(rules)
    (tmp / "prometheus.yml").write_text(
        f"global: {{evaluation_interval: 1s}}\nrule_files: ['{tmp / 'rules.yml'}']\n"
    )
    port = closed_port()
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", "--storage.tsdb.retention.time=60d",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield Backfilled(f"http://127.0.0.1:{port}", history)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def targets(path: Path) -> list[tuple[str, str]]:
    """(panel title, expression) of every query of a dashboard."""
    panels = orjson.loads(path.read_bytes())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def panel(title: str, end: int) -> list[str]:
    return [grafana(expr, end) for name, expr in targets(CAPACITY) if name == title]


def near(got: float, want: float, tolerance: float) -> bool:
    return abs(got - want) <= tolerance * abs(want)


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda p: p.stem)
def test_every_dashboard_query_has_data(backfilled: Backfilled, dashboard: Path) -> None:
    for title, expr in targets(dashboard):
        assert backfilled.query(grafana(expr, backfilled.history.end)), (title, expr)


def test_every_recording_rule_has_data(backfilled: Backfilled) -> None:
    records = sorted(set(re.findall(r"(?m)^\s+- record: (\S+)$", RULES.read_text())))
    assert len(records) >= 25
    missing = set(records)
    deadline = time.monotonic() + 20
    while missing and time.monotonic() < deadline:
        missing = {
            name for name in missing if not backfilled.query(name, datetime.now(UTC).timestamp())
        }
        time.sleep(0.2)  # rules are evaluated every second; poll until each has been
    assert not missing


def test_concurrency_forecasts_follow_the_trend(backfilled: Backfilled) -> None:
    h, end = backfilled.history, backfilled.history.end
    f7, f30, days_configured, days_reported = (
        backfilled.value(panel(title, end)[0])
        for title in (
            "Peak concurrency in 7 days",
            "Peak concurrency in 30 days",
            "Days until the configured limit",
            "Days until the reported limit",
        )
    )
    assert near(f7, h.expected_peak_concurrency(end + 7 * DAY), 0.1)
    assert near(f30, h.expected_peak_concurrency(end + 30 * DAY), 0.1)
    per_trend = gen.BASE_RPS * gen.MEAN_DURATION_S * gen.PEAK_FACTOR
    assert near(days_configured, h.days_until(gen.CONFIGURED["concurrency"], per_trend), 0.15)
    assert near(days_reported, h.days_until(gen.REPORTED_CONCURRENCY, per_trend), 0.15)


def test_request_and_token_forecasts_follow_the_trend(backfilled: Backfilled) -> None:
    h, end = backfilled.history, backfilled.history.end
    rpm = panel("Requests per minute: hourly mean, forecasts, RPM limit", end)
    tpm = panel("Tokens per minute: hourly mean, forecasts, TPM limit", end)
    tokens_per_request = sum(m.share * (m.input_tokens + m.output_tokens) for m in gen.MODELS)
    ok = 1 - gen.BASE_429 - gen.BASE_5XX
    for days, index in ((7, 1), (30, 2)):
        peak_rpm = gen.BASE_RPS * 60 * gen.PEAK_FACTOR * h.trend(end + days * DAY)
        assert near(backfilled.value(rpm[index]), peak_rpm, 0.1)
        assert near(backfilled.value(tpm[index]), peak_rpm * tokens_per_request * ok, 0.1)


def test_littles_law_matches_the_concurrency_in_flight(backfilled: Backfilled) -> None:
    h, end = backfilled.history, backfilled.history.end
    needed, in_flight, *_ = panel("Concurrency needed vs in flight vs allowed", end)
    exact = h.increase("llm_request_duration_seconds_sum", end - 3600) / 3600
    assert near(backfilled.value(needed), exact, 0.01)
    assert near(backfilled.value(needed), backfilled.value(in_flight), 0.1)
    (duration,) = panel("Mean request duration", end)
    assert near(backfilled.value(duration), gen.MEAN_DURATION_S, 0.05)


def test_peak_profile_finds_weekday_mornings_utc(backfilled: Backfilled) -> None:
    end = backfilled.history.end
    (expr,) = panel("Requests per hour by hour of day and weekday (UTC, 4 weeks)", end)
    cells = {
        (int(s["metric"]["weekday"]), int(s["metric"]["hour"])): float(s["value"][1])
        for s in backfilled.query(expr)
    }
    assert len(cells) == 7 * 24
    weekday, hour = max(cells, key=cells.__getitem__)
    assert 1 <= weekday <= 5 and abs(hour - gen.PEAK_HOUR_UTC) <= 1
    # Saturday (6) against Wednesday (3), same hour: the weekly cycle.
    ratio = cells[(6, gen.PEAK_HOUR_UTC)] / cells[(3, gen.PEAK_HOUR_UTC)]
    assert near(ratio, gen.WEEKEND_FACTOR, 0.1)


def test_off_peak_share_and_the_end_of_the_discount(backfilled: Backfilled) -> None:
    h, end = backfilled.history, backfilled.history.end
    (share,) = panel("Tokens in the off-peak window (7 days)", end)
    off_peak = all_tokens = 0.0
    first = end - 7 * DAY + 1800 - (end - 7 * DAY) % 1800  # subquery steps: multiples of 30m
    for stop in range(first, end + 1, 1800):
        minute = (stop % DAY) // 60
        tokens = sum(
            h.increase("llm_tokens_total", stop - 1800, stop, type=kind)
            for kind in ("input", "output")
        )
        all_tokens += tokens
        off_peak += tokens if minute >= 1020 or minute <= 30 else 0.0
    # 3 %: increase() extrapolates each 30-minute window from its 10-minute samples, and how far
    # that lands from the exact sum depends on the time of day the history ends; a window shifted
    # by one hour moves the share by over 10 %.
    assert near(backfilled.value(share), off_peak / all_tokens, 0.03)
    (price,) = panel("Blended price per million tokens (daily)", end)
    for at in (end, end - 15 * DAY):
        cost = h.increase("llm_cost_usd_total", at - DAY, at)
        tokens = sum(
            h.increase("llm_tokens_total", at - DAY, at, type=kind) for kind in ("input", "output")
        )
        assert near(backfilled.value(price, at), cost / tokens * 1e6, 0.01)
    assert backfilled.value(price, end - 15 * DAY) < 0.9 * backfilled.value(price)


def test_spend_per_day_and_month_end_projection(backfilled: Backfilled) -> None:
    h, end = backfilled.history, backfilled.history.end
    (per_type,) = panel("Spend per day by type", end)
    got = sum(float(s["value"][1]) for s in backfilled.query(per_type))
    assert near(got, h.increase("llm_cost_usd_total", end - DAY), 0.01)
    since = max(end - month_to_date(end), h.start)
    so_far = h.increase("llm_cost_usd_total", since)
    (mtd,) = panel("Spend this month so far", end)
    assert near(backfilled.value(mtd), so_far, 0.02)
    moment = datetime.fromtimestamp(end, UTC)
    next_month = moment.replace(day=28) + (moment.replace(day=28) - moment.replace(day=24))
    month_end = next_month.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days_left = (month_end.timestamp() - end) / DAY
    projected = so_far + h.increase("llm_cost_usd_total", end - 7 * DAY) / 7 * days_left
    (projection,) = panel("Month-end projection", end)
    assert near(backfilled.value(projection), projected, 0.02)


def test_cache_savings_left_on_the_table_and_runway(backfilled: Backfilled) -> None:
    h, end = backfilled.history, backfilled.history.end
    saved, left = panel("Cache savings and savings left on the table (daily)", end)
    assert near(backfilled.value(saved), h.increase("llm_cache_savings_usd_total", end - DAY), 0.01)
    left_expected = 0.0
    for m in gen.MODELS:
        hit_usd, miss_usd, _ = m.usd_per_m
        miss_cost = h.increase("llm_cost_usd_total", end - DAY, type="cache_miss", model=m.name)
        left_expected += miss_cost * (miss_usd - hit_usd) / miss_usd
    assert near(backfilled.value(left), left_expected, 0.01)
    (trend,) = panel("Balance runway (days, 7-day trend)", end)
    (usd,) = panel("Balance runway at last week's spend (USD)", end)
    assert near(backfilled.value(trend), gen.RUNWAY_DAYS, 0.1)
    assert near(backfilled.value(usd), gen.RUNWAY_DAYS, 0.01)


def test_slo_burn_rates_remember_the_429_storm(backfilled: Backfilled) -> None:
    h, end = backfilled.history, backfilled.history.end
    errors = h.increase("llm_requests_total", end - 3 * DAY, code="429")
    errors += h.increase("llm_requests_total", end - 3 * DAY, code="503")
    total = h.increase("llm_requests_total", end - 3 * DAY)
    rule = re.search(
        r"record: upstream:llm_slo_availability:burnrate3d\n\s+expr: \|\n(.*?)\n\s+- ",
        RULES.read_text(),
        re.S,
    )
    assert rule is not None
    expr = rule.group(1).replace('llm:slo_objective:ratio{slo="availability"}', "vector(0.99)")
    burn = backfilled.value(expr)
    assert burn > 1  # the storm spent more than three days of budget
    assert near(burn, errors / total / 0.01, 0.02)
