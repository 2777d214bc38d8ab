"""Generate ``dashboards/deepseek-capacity.json``, the capacity-planning dashboard.

The queries repeat a few building blocks (a week's mean, last week's peak, a growth factor), so
they are written once here and the JSON is generated; ``tests/test_dashboards.py`` fails when the
committed JSON differs from a fresh generation. Every query reads raw sidecar series (no recording
rule), so the dashboard works over the whole retention as soon as Prometheus has the data.
How the forecasts are computed: docs/capacity-planning.md.

Run ``python dashboards/capacity.py`` after editing; ``--check`` only compares.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

OUT = Path(__file__).with_name("deepseek-capacity.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
U = 'upstream=~"$upstream"'

# Demand series, summed over every sidecar of an upstream.
IN_FLIGHT = f"sum by (upstream) (llm_in_flight_requests{{{U}}})"
RPM = f"sum by (upstream) (rate(llm_requests_total{{{U}}}[1h])) * 60"
TPM = f'sum by (upstream) (rate(llm_tokens_total{{type=~"input|output", {U}}}[1h])) * 60'
NEEDED = f"sum by (upstream) (rate(llm_request_duration_seconds_sum{{{U}}}[1h]))"
COST = f"llm_cost_usd_total{{{U}}}"
REPORTED = f'max by (upstream) (llm_upstream_concurrency_limit{{source="reported", {U}}})'


class Demand:
    """A linear forecast of a demand series' weekly peak.

    ``mean1``/``mean0`` are the means of the last week and the week before: a 7-day mean holds
    whole daily and weekly cycles, so the two differ by a week of trend, and ``1 - mean0 / mean1``
    is the growth per week. Last week's peak, grown by that much per week, is the forecast; the
    peak is taken as today's level (under growth it is one of the last weekdays'), which errs on
    the safe side.
    """

    def __init__(self, peak: str, mean1: str, mean0: str) -> None:
        self.peak, self.mean1, self.mean0 = peak, mean1, mean0

    def growth(self) -> str:
        return f"(1 - {self.mean0} / {self.mean1})"

    def forecast(self, days: int) -> str:
        return f"{self.peak} * (1 + {self.growth()} * {days} / 7)"

    def days_until(self, limit: str) -> str:
        """Days until the forecast peak reaches ``limit`` (0 when already there)."""
        slope = f"clamp_min({self.growth()}, 1e-9)"
        return f"clamp_min(({limit} / {self.peak} - 1) * 7 / {slope}, 0)"


CONCURRENCY = Demand(
    f"max_over_time({IN_FLIGHT}[7d:10m])",
    f"avg_over_time({IN_FLIGHT}[7d:10m])",
    f"avg_over_time({IN_FLIGHT}[7d:10m] offset 7d)",
)
REQUESTS = Demand(
    f"max_over_time(({RPM})[7d:1h])",
    f"sum by (upstream) (increase(llm_requests_total{{{U}}}[7d]))",
    f"sum by (upstream) (increase(llm_requests_total{{{U}}}[7d] offset 7d))",
)
TOKENS = Demand(
    f"max_over_time(({TPM})[7d:1h])",
    f'sum by (upstream) (increase(llm_tokens_total{{type=~"input|output", {U}}}[7d]))',
    f'sum by (upstream) (increase(llm_tokens_total{{type=~"input|output", {U}}}[7d] offset 7d))',
)

# Hour of day and weekday (UTC) of the hour that ends at the subquery step, as labels.
HOUR_LABELS = (
    'count_values("hour", hour(vector(time() - 3600)))'
    ' * on () group_left (weekday) count_values("weekday", day_of_week(vector(time() - 3600)))'
)
PEAK_PROFILE = (
    f"avg_over_time((sum by (upstream) (increase(llm_requests_total{{{U}}}[1h]))"
    f" * on () group_left (hour, weekday) ({HOUR_LABELS}))[28d:1h])"
)
# DeepSeek's off-peak window, 16:30-00:30 UTC: half-hours that end at 17:00 ... 00:30.
OFF_PEAK = "(hour() * 60 + minute() >= 1020 or hour() * 60 + minute() <= 30)"
TOKENS_IO = f'llm_tokens_total{{type=~"input|output", {U}}}'
OFF_PEAK_SHARE = (
    f"sum_over_time((sum by (upstream) (increase({TOKENS_IO}[30m])) and on () {OFF_PEAK})[7d:30m])"
    f" / sum by (upstream) (increase({TOKENS_IO}[7d]))"
)
PRICE_PER_M = (
    f"sum by (upstream) (increase({COST}[1d]))"
    f" / sum by (upstream) (increase({TOKENS_IO}[1d])) * 1e6"
)
MONTH_TO_DATE = f"sum(increase({COST}[$__range]))"
DAYS_LEFT_IN_MONTH = "scalar(days_in_month() - day_of_month() + 1 - (time() % 86400) / 86400)"
MONTH_END = f"{MONTH_TO_DATE} + sum(increase({COST}[7d])) / 7 * {DAYS_LEFT_IN_MONTH}"
# A cache hit saves (miss - hit) price; (miss - hit) / miss = savings / (savings + hit spend).
SAVED_SHARE = (
    f"(increase(llm_cache_savings_usd_total{{{U}}}[7d])"
    f" / (increase(llm_cache_savings_usd_total{{{U}}}[7d])"
    f' + on (upstream, model) increase(llm_cost_usd_total{{type="cache_hit", {U}}}[7d])))'
)
LEFT_ON_TABLE = (
    f'sum by (upstream) (increase(llm_cost_usd_total{{type="cache_miss", {U}}}[1d])'
    f" * on (upstream, model) {SAVED_SHARE})"
)
BALANCE = f"llm_account_balance{{{U}}}"


def configured(resource: str) -> str:
    """The account limit set with ``--limit-*``."""
    return f'max by (upstream) (llm_ratelimit_configured{{resource="{resource}", {U}}})'


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"refId": ref, "expr": expr, "legendFormat": legend, "datasource": DS}
    if instant:
        out |= {"instant": True, "range": False, "format": "table"}
    return out


def panel(kind: str, title: str, description: str, targets: list[tuple[str, str]], unit: str,
          **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A panel without id and position: ``layout`` adds them."""
    instant = kind == "table"
    refs = "ABCDEFGH"
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [
            target(expr, legend, refs[i], instant) for i, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        **extra,
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


# fmt: off
PANELS: list[tuple[dict[str, Any], int, int]] = [  # (panel, width, height)
    (row("Concurrency: demand, forecast and limits"), 24, 1),
    (panel("stat", "Peak concurrency, last 7 days",
           "Most requests in flight at once over the last 7 days, summed over every sidecar of "
           "the upstream (sampled every 10 minutes).",
           [(CONCURRENCY.peak, "{{upstream}}")], "short"), 5, 4),
    (panel("stat", "Peak concurrency in 7 days",
           "Linear forecast of the weekly peak 7 days ahead: last week's peak grown by the growth "
           "between the last two 7-day means (whole daily and weekly cycles cancel out).",
           [(CONCURRENCY.forecast(7), "{{upstream}}")], "short"), 5, 4),
    (panel("stat", "Peak concurrency in 30 days",
           "The same linear forecast 30 days ahead. Compare with the account's concurrency limit, "
           "which DeepSeek lowers as the balance falls.",
           [(CONCURRENCY.forecast(30), "{{upstream}}")], "short"), 5, 4),
    (panel("stat", "Days until the configured limit",
           "Days until the forecast weekly peak reaches --limit-concurrency (0: already there; "
           "very large: no growth).",
           [(CONCURRENCY.days_until(configured("concurrency")), "{{upstream}}")], "d"),
     5, 4),
    (panel("stat", "Days until the reported limit",
           "Days until the forecast weekly peak reaches the limit DeepSeek named in its last 429 "
           "(it follows the balance).", [(CONCURRENCY.days_until(REPORTED), "{{upstream}}")],
           "d"), 4, 4),
    (panel("timeseries", "Concurrency: daily peak, forecasts and limits",
           "Daily peak of requests in flight, the 7- and 30-day forecasts made at each point in "
           "time, and the configured and reported concurrency limits.",
           [(f"max_over_time({IN_FLIGHT}[1d:10m])", "daily peak {{upstream}}"),
            (CONCURRENCY.forecast(7), "forecast +7d {{upstream}}"),
            (CONCURRENCY.forecast(30), "forecast +30d {{upstream}}"),
            (configured("concurrency"), "configured limit {{upstream}}"),
            (REPORTED, "reported limit {{upstream}}")], "short", interval="6h"), 24, 9),
    (row("Requests and tokens"), 24, 1),
    (panel("timeseries", "Requests per minute: hourly mean, forecasts, RPM limit",
           "Requests per minute averaged over each hour, the weekly-peak forecasts 7 and 30 days "
           "ahead, and the configured RPM limit (--limit-rpm).",
           [(RPM, "{{upstream}}"), (REQUESTS.forecast(7), "forecast +7d {{upstream}}"),
            (REQUESTS.forecast(30), "forecast +30d {{upstream}}"),
            (configured("requests_per_minute"), "configured RPM {{upstream}}")], "short",
           interval="1h"), 12, 8),
    (panel("timeseries", "Tokens per minute: hourly mean, forecasts, TPM limit",
           "Input plus output tokens per minute averaged over each hour, the weekly-peak "
           "forecasts, and the configured TPM limit (--limit-tpm).",
           [(TPM, "{{upstream}}"), (TOKENS.forecast(7), "forecast +7d {{upstream}}"),
            (TOKENS.forecast(30), "forecast +30d {{upstream}}"),
            (configured("tokens_per_minute"), "configured TPM {{upstream}}")], "short",
           interval="1h"), 12, 8),
    (row("Concurrency needed (Little's law)"), 24, 1),
    (panel("timeseries", "Concurrency needed vs in flight vs allowed",
           "Little's law: arrival rate x mean duration = rate of the duration sum. It should "
           "match the mean in flight; the gap to the limits is the headroom.",
           [(NEEDED, "needed {{upstream}}"),
            (f"avg_over_time({IN_FLIGHT}[1h:5m])", "in flight (1h mean) {{upstream}}"),
            (configured("concurrency"), "configured limit {{upstream}}"),
            (REPORTED, "reported limit {{upstream}}")], "short", interval="1h"), 12, 8),
    (panel("stat", "Concurrency needed at the busiest hour (7 days)",
           "Little's law at the busiest hour of the last 7 days: the concurrency the account "
           "needed then.", [(f"max_over_time(({NEEDED})[7d:1h])", "{{upstream}}")], "short"),
     6, 8),
    (panel("timeseries", "Mean request duration",
           "Duration sum over count per hour: the W of Little's law. DeepSeek's queueing makes "
           "it grow at peak hours.",
           [(f"{NEEDED} / sum by (upstream) (rate(llm_request_duration_seconds_count{{{U}}}"
             "[1h]))", "{{upstream}}")], "s", interval="1h"), 6, 8),
    (row("Peak hours and price windows"), 24, 1),
    (panel("table", "Requests per hour by hour of day and weekday (UTC, 4 weeks)",
           "Mean requests in each hour (UTC, the hour starting at `hour`) per weekday (0 = "
           "Sunday) over the last 28 days: where the peak sits relative to DeepSeek's peak and "
           "off-peak price windows.",
           [(PEAK_PROFILE, "")], "short",
           transformations=[{"id": "groupingToMatrix", "options": {
               "columnField": "weekday", "rowField": "hour", "valueField": "Value"}}]), 12, 10),
    (panel("stat", "Tokens in the off-peak window (7 days)",
           "Share of input and output tokens of the last 7 days sent in DeepSeek's off-peak "
           "window (16:30-00:30 UTC), where discounts applied.",
           [(OFF_PEAK_SHARE, "{{upstream}}")], "percentunit"), 4, 10),
    (panel("timeseries", "Blended price per million tokens (daily)",
           "Estimated spend over input plus output tokens per day: a step shows a price or "
           "price-window change, a slope a shift in the model or cache mix.",
           [(PRICE_PER_M, "{{upstream}}")], "currencyUSD", interval="1d"), 8, 10),
    (row("Spend"), 24, 1),
    (panel("timeseries", "Spend per day by type",
           "Estimated USD spend per day from the price catalogue: cache-hit input, cache-miss "
           "input and output.",
           [(f"sum by (type) (increase({COST}[1d]))", "{{type}}")], "currencyUSD",
           interval="1d"), 12, 8),
    (panel("stat", "Spend this month so far",
           "Estimated spend since the first of the month (UTC).",
           [(MONTH_TO_DATE, "")], "currencyUSD", timeFrom="now/M"), 6, 8),
    (panel("stat", "Month-end projection",
           "Spend so far this month plus the last 7 days' mean daily spend for each day left.",
           [(MONTH_END, "")], "currencyUSD", timeFrom="now/M"), 6, 8),
    (row("Cache and balance"), 24, 1),
    (panel("timeseries", "Cache savings and savings left on the table (daily)",
           "Savings: what cache hits saved versus the miss price. Left on the table: cache-miss "
           "input priced as hits, an upper bound (the sidecar cannot see which misses share a "
           "prefix with earlier prompts).",
           [(f"sum by (upstream) (increase(llm_cache_savings_usd_total{{{U}}}[1d]))",
             "saved {{upstream}}"), (LEFT_ON_TABLE, "left on the table {{upstream}}")],
           "currencyUSD", interval="1d"), 8, 8),
    (panel("stat", "Cache-hit ratio (7 days)",
           "Cache-hit input tokens over all input tokens with a known cache outcome, last 7 "
           "days.",
           [(f'sum by (upstream) (increase(llm_tokens_total{{type="cache_hit", {U}}}[7d]))'
             f' / sum by (upstream) (increase(llm_tokens_total{{type=~"cache_hit|cache_miss", '
             f"{U}}}[7d]))", "{{upstream}}")], "percentunit"), 4, 8),
    (panel("stat", "Balance runway (days, 7-day trend)",
           "Days until the balance reaches zero at the rate it fell over the last 7 days (any "
           "currency; a top-up in the window shortens the trend).",
           [(f"{BALANCE} / clamp_min(-deriv({BALANCE}[7d]) * 86400, 1e-9)",
             "{{upstream}} {{currency}}")], "d"), 4, 8),
    (panel("stat", "Balance runway at last week's spend (USD)",
           "USD balance over the mean daily estimated spend of the last 7 days.",
           [(f'llm_account_balance{{currency="USD", {U}}} / on (upstream) '
             f"(sum by (upstream) (increase({COST}[7d])) / 7)", "{{upstream}}")], "d"), 4, 8),
    (panel("timeseries", "Balance and 30-day projection",
           "Balance, and where the last 7 days' trend puts it 30 days later.",
           [(BALANCE, "{{upstream}} {{currency}}"),
            (f"predict_linear({BALANCE}[7d], 30 * 86400)", "in 30 days {{upstream}}")],
           "short", interval="1h"), 4, 8),
]
# fmt: on


def layout(panels: list[tuple[dict[str, Any], int, int]]) -> list[dict[str, Any]]:
    """Number the panels and place them left to right, wrapping at 24 columns."""
    out, x, y, line = [], 0, 0, 0
    for number, (item, width, height) in enumerate(panels, start=1):
        if x + width > 24:
            x, y, line = 0, y + line, 0
        out.append({**item, "id": number, "gridPos": {"h": height, "w": width, "x": x, "y": y}})
        x, line = x + width, max(line, height)
    return out


def dashboard() -> dict[str, Any]:
    upstream_query = "label_values(llm_requests_total, upstream)"
    return {
        "title": "deepseek-sidecar capacity",
        "uid": "deepseek-capacity",
        "description": "Days and weeks: demand and forecasts against the limits, Little's law, "
        "peak hours, spend and month-end projection, cache savings, balance runway.",
        "tags": ["llm", "deepseek", "deepseek-sidecar", "capacity"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "1h",
        "time": {"from": "now-30d", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus",
                 "label": "Data source", "current": {}, "hide": 0},
                {"name": "upstream", "type": "query", "label": "Upstream", "datasource": DS,
                 "query": {"query": upstream_query, "refId": "upstream"}, "multi": True,
                 "includeAll": True, "allValue": ".*", "refresh": 2, "current": {}},
            ]
        },
        "annotations": {"list": []},
        "panels": layout(PANELS),
    }  # fmt: skip


def render() -> str:
    return orjson.dumps(dashboard(), option=orjson.OPT_INDENT_2).decode() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        stale = not OUT.exists() or OUT.read_text() != text
        if stale:
            print(f"stale: {OUT.name} (run python dashboards/capacity.py)", file=sys.stderr)
        return 1 if stale else 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
