"""Cost of an exchange: hand-computed figures across peak hours and price windows."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from sidecar.accounting.catalogue import Catalogue, Prices
from sidecar.accounting.cost import cost_of
from sidecar.exchange import Cost, Usage

CATALOGUE = Catalogue.builtin()
USAGE = Usage(input=1000, output=500, cache_hit=128, cache_miss=872, reasoning=200)


def cost_at(model: str, when: str, usage: Usage = USAGE) -> Cost:
    prices = CATALOGUE.prices_at(model, datetime.fromisoformat(when).replace(tzinfo=UTC))
    assert prices is not None
    return cost_of(usage, prices)


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=0)


# (hit, miss, output, savings) in USD, worked by hand from the per-1M prices:
# deepseek-flash peak $0.006 / $0.30 / $1.20: 128*0.006e-6, 872*0.30e-6, 500*1.20e-6,
# savings 128*(0.30-0.006)e-6.
FLASH_PEAK = (7.68e-7, 2.616e-4, 6.0e-4, 3.7632e-5)
FLASH_OFF = (3.84e-7, 1.308e-4, 3.0e-4, 1.8816e-5)
# Aug-2026 flash window off-peak: $0.007 / $0.22 / $0.66.
FLASH_AUG_OFF = (8.96e-7, 1.9184e-4, 3.3e-4, 128 * 0.213e-6)
# deepseek-v4-pro peak $0.044 / $1.32 / $3.96.
PRO_PEAK = (5.632e-6, 1.15104e-3, 1.98e-3, 128 * 1.276e-6)


@pytest.mark.parametrize(
    ("model", "when", "expected"),
    [
        ("deepseek-flash", "2026-11-30T03:59:59", FLASH_PEAK),  # Monday, last peak second
        ("deepseek-flash", "2026-11-30T04:00:00", FLASH_OFF),  # first off-peak second
        ("deepseek-flash", "2026-11-28T03:00:00", FLASH_OFF),  # Saturday
        ("deepseek-v4-flash", "2026-11-30T09:00:00", FLASH_PEAK),  # legacy name
        ("deepseek-flash", "2026-09-09T15:59:59", FLASH_AUG_OFF),  # before the Sept cut
        ("deepseek-flash", "2026-09-09T16:00:00", FLASH_OFF),  # after it
        ("deepseek-v4-pro", "2026-11-30T01:00:00", PRO_PEAK),
    ],
)
def test_cost_by_hand(model: str, when: str, expected: tuple[float, float, float, float]) -> None:
    cost = cost_at(model, when)
    hit, miss, output, savings = expected
    assert cost.cache_hit_usd == approx(hit)
    assert cost.cache_miss_usd == approx(miss)
    assert cost.output_usd == approx(output)
    assert cost.savings_usd == approx(savings)
    assert cost.total == approx(hit + miss + output)


def test_peak_is_exactly_twice_off_peak() -> None:
    peak = cost_at("deepseek-flash", "2026-11-30T03:59:59")
    off = cost_at("deepseek-flash", "2026-11-30T04:00:00")
    assert peak.total == 2 * off.total
    assert peak.total == approx(8.62368e-4)


PRICES = Prices(
    cache_hit=Decimal("0.006") / 1_000_000,
    cache_miss=Decimal("0.30") / 1_000_000,
    output=Decimal("1.20") / 1_000_000,
)


@pytest.mark.parametrize(
    ("usage", "hit_tokens", "miss_tokens", "output_tokens"),
    [
        (Usage(input=1000, output=10), 0, 1000, 10),  # no cache fields: all input is a miss
        (Usage(input=1000, output=10, cache_hit=256), 256, 744, 10),  # miss = input - hit
        (Usage(input=1000, cache_hit=256, cache_miss=700), 256, 700, 0),  # reported miss wins
        (Usage(output=7), 0, 0, 7),  # no input reported
        (Usage(), 0, 0, 0),
    ],
)
def test_missing_fields(
    usage: Usage, hit_tokens: int, miss_tokens: int, output_tokens: int
) -> None:
    cost = cost_of(usage, PRICES)
    assert cost.cache_hit_usd == (approx(hit_tokens * 0.006e-6) if hit_tokens else 0)
    assert cost.cache_miss_usd == (approx(miss_tokens * 0.30e-6) if miss_tokens else 0)
    assert cost.output_usd == (approx(output_tokens * 1.20e-6) if output_tokens else 0)
    assert cost.savings_usd == (approx(hit_tokens * 0.294e-6) if hit_tokens else 0)


def test_large_counts_stay_exact() -> None:
    # 1M-token prompt fully cached, 384K output: 1e6*0.006e-6 = 0.006, 384000*1.2e-6 = 0.4608.
    cost = cost_of(
        Usage(input=1_000_000, cache_hit=1_000_000, cache_miss=0, output=384_000), PRICES
    )
    assert cost.cache_hit_usd == 0.006
    assert cost.output_usd == 0.4608
    assert cost.savings_usd == 0.294
