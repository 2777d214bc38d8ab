"""The view's numbers from hand-made exposition text: parsing, merging, rates, quantiles."""
# ruff: noqa: E501  (exposition lines are long by nature)

from __future__ import annotations

import math

import pytest

from sidecar.console.snapshot import ModelRow, Scrape, View, compute, merge, parse, quantile
from sidecar.console.view import render_text

BEFORE = """
# TYPE llm_requests_total counter
llm_requests_total{upstream="deepseek",route="chat_completions",model="deepseek-flash",stream="true",code="200",outcome="completed"} 10
llm_requests_total{upstream="deepseek",route="chat_completions",model="deepseek-flash",stream="true",code="429",outcome="completed"} 1
# TYPE llm_tokens_total counter
llm_tokens_total{upstream="deepseek",model="deepseek-flash",type="input"} 1000
llm_tokens_total{upstream="deepseek",model="deepseek-flash",type="output"} 100
llm_tokens_total{upstream="deepseek",model="deepseek-flash",type="cache_hit"} 600
llm_tokens_total{upstream="deepseek",model="deepseek-flash",type="cache_miss"} 400
# TYPE llm_time_to_first_token_seconds histogram
llm_time_to_first_token_seconds_bucket{upstream="deepseek",route="chat_completions",model="deepseek-flash",le="0.5"} 5
llm_time_to_first_token_seconds_bucket{upstream="deepseek",route="chat_completions",model="deepseek-flash",le="1.0"} 10
llm_time_to_first_token_seconds_bucket{upstream="deepseek",route="chat_completions",model="deepseek-flash",le="+Inf"} 10
llm_time_to_first_token_seconds_count{upstream="deepseek",route="chat_completions",model="deepseek-flash"} 10
llm_time_to_first_token_seconds_sum{upstream="deepseek",route="chat_completions",model="deepseek-flash"} 6.0
# TYPE llm_in_flight_requests gauge
llm_in_flight_requests{upstream="deepseek",route="chat_completions"} 3
# TYPE llm_upstream_concurrency_limit gauge
llm_upstream_concurrency_limit{upstream="deepseek",source="reported"} 40
"""

AFTER = (
    BEFORE.replace('code="200",outcome="completed"} 10', 'code="200",outcome="completed"} 40')
    .replace('type="input"} 1000', 'type="input"} 4000')
    .replace('type="output"} 100', 'type="output"} 400')
    .replace('type="cache_hit"} 600', 'type="cache_hit"} 2400')
    .replace('type="cache_miss"} 400', 'type="cache_miss"} 1000')
    .replace('le="0.5"} 5', 'le="0.5"} 5')
    .replace('le="1.0"} 10', 'le="1.0"} 30')
    .replace('le="+Inf"} 10', 'le="+Inf"} 30')
)

COST = """
# TYPE llm_cost_usd_total counter
llm_cost_usd_total{upstream="deepseek",model="deepseek-flash",type="output"} 0.5
# TYPE llm_cache_savings_usd_total counter
llm_cache_savings_usd_total{upstream="deepseek",model="deepseek-flash"} 0.25
# TYPE llm_ratelimit_configured gauge
llm_ratelimit_configured{upstream="deepseek",resource="concurrency"} 50
"""


def test_parse_keeps_counter_names_and_drops_created() -> None:
    text = BEFORE + 'llm_requests_created{model="x"} 1.7e9\n'
    samples = parse(text)
    names = {name for name, _ in samples}
    assert "llm_requests_total" in names
    assert "llm_time_to_first_token_seconds_bucket" in names
    assert not any(name.endswith("_created") for name in names)


def test_quantile_interpolates_like_promql() -> None:
    buckets = {0.5: 5.0, 1.0: 10.0, math.inf: 10.0}
    assert quantile(0.5, buckets) == pytest.approx(0.5)
    assert quantile(0.75, buckets) == pytest.approx(0.75)
    assert quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert quantile(0.99, {1.0: 1.0, math.inf: 2.0}) == 1.0  # +Inf bucket: the last finite bound


def test_rates_and_window_quantiles() -> None:
    prev = Scrape(at=100.0, samples=parse(BEFORE))
    cur = Scrape(at=130.0, samples=parse(AFTER))
    view = compute(prev, cur)
    (row,) = view.rows
    assert row.model == "deepseek-flash"
    assert row.requests_per_min == pytest.approx(60.0)  # 30 requests in 30 s
    assert row.tokens_per_min == pytest.approx((3000 + 300) * 2)
    assert row.rate_limited == 1
    # Window: 20 new observations, all in the 0.5..1.0 bucket.
    assert row.ttft_p50 == pytest.approx(0.75)
    assert row.cache_hit_ratio == pytest.approx(1800 / 2400)
    assert row.spend_per_hour is None and row.savings_per_hour is None
    assert (view.in_flight, view.limit, view.limit_source) == (3, 40, "reported")
    assert view.window_s == pytest.approx(30.0)


def test_first_frame_is_cumulative() -> None:
    view = compute(None, Scrape(at=1.0, samples=parse(BEFORE)))
    (row,) = view.rows
    assert row.requests_per_min is None
    assert row.ttft_p50 == pytest.approx(0.5)
    assert row.cache_hit_ratio == pytest.approx(0.6)


def test_counter_reset_counts_from_zero() -> None:
    prev = Scrape(at=0.0, samples=parse(AFTER))
    cur = Scrape(at=60.0, samples=parse(BEFORE))
    (row,) = compute(prev, cur).rows
    assert row.requests_per_min == pytest.approx(10.0)  # the 200 series restarted; 429 did not


def test_cost_series_and_configured_limit() -> None:
    prev = Scrape(at=0.0, samples=parse(BEFORE + COST))
    cur = Scrape(at=36.0, samples=parse(AFTER + COST.replace("} 0.5", "} 0.6")))
    view = compute(prev, cur)
    assert view.rows[0].spend_per_hour == pytest.approx(10.0)  # $0.1 in 36 s
    assert view.rows[0].savings_per_hour == pytest.approx(0.0)
    assert view.spend_total == pytest.approx(0.6)
    assert (view.limit, view.limit_source) == (50, "configured")


def test_merge_sums_sidecars() -> None:
    merged = merge(5.0, [parse(BEFORE), parse(BEFORE)])
    view = compute(None, merged)
    assert view.in_flight == 6
    assert view.requests == 22
    assert view.limit == 80


def test_plain_frame_shows_numbers_and_dashes() -> None:
    prev = Scrape(at=100.0, samples=parse(BEFORE))
    cur = Scrape(at=130.0, samples=parse(AFTER))
    text = render_text(compute(prev, cur), "title", "footer line")
    assert "deepseek-flash" in text and "60.0" in text and "75%" in text
    assert "3/40" in text and "\u2013" in text and "footer line" in text
    assert "\x1b[" not in text


def test_empty_metrics() -> None:
    text = render_text(compute(None, Scrape(at=0.0, samples={})), "t")
    assert "no traffic yet" in text and "limit unknown" in text


def test_the_frame_fits_an_80_column_terminal() -> None:
    view = View(
        window_s=1.0,
        in_flight=9,
        limit=12,
        limit_source="configured",
        requests=40,
        rate_limited=3,
        spend_total=0.0036,
        savings_total=0.0079,
        rows=[
            ModelRow(
                "deepseek-reasoner",
                40,
                123.4,
                98765,
                3,
                0.75,
                0.975,
                0.375,
                1.95,
                0.92,
                2.1234,
                4.5678,
            ),
        ],
    )
    narrow = render_text(view, "deepseek-sidecar demo  http://127.0.0.1:48321/metrics", width=80)
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert "…" not in narrow  # nothing cut off: columns give way instead
    for shown in ("deepseek-reasoner", "123.4", "975ms", "1.95s", "92%", "$2.1234"):
        assert shown in narrow, shown
    wide = render_text(view, "t", width=150)
    for shown in ("98765", "750ms", "375ms", "$4.5678"):
        assert shown in wide and shown not in narrow, shown
