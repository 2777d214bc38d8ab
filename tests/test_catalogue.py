"""The model catalogue: built-in prices, windows, peak hours, aliases and bad files."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from sidecar.accounting.catalogue import Catalogue, CatalogueError, Prices


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def builtin() -> Catalogue:
    return Catalogue.builtin()


def per_million(prices: Prices | None) -> tuple[Decimal, Decimal, Decimal, bool]:
    assert prices is not None
    million = Decimal(1_000_000)
    return (
        prices.cache_hit * million,
        prices.cache_miss * million,
        prices.output * million,
        prices.off_peak,
    )


LATEST_FLASH_PEAK = (Decimal("0.006"), Decimal("0.30"), Decimal("1.20"), False)
LATEST_FLASH_OFF = (Decimal("0.003"), Decimal("0.15"), Decimal("0.60"), True)


@pytest.mark.parametrize(
    ("model", "when", "expected"),
    [
        # Monday 2026-11-30: peak is 01:00-04:00 and 06:00-10:00 UTC, end exclusive.
        ("deepseek-flash", "2026-11-30T00:59:59", LATEST_FLASH_OFF),
        ("deepseek-flash", "2026-11-30T01:00:00", LATEST_FLASH_PEAK),
        ("deepseek-flash", "2026-11-30T03:59:59.999999", LATEST_FLASH_PEAK),
        ("deepseek-flash", "2026-11-30T04:00:00", LATEST_FLASH_OFF),
        ("deepseek-flash", "2026-11-30T05:59:59", LATEST_FLASH_OFF),
        ("deepseek-flash", "2026-11-30T06:00:00", LATEST_FLASH_PEAK),
        ("deepseek-flash", "2026-11-30T09:59:59", LATEST_FLASH_PEAK),
        ("deepseek-flash", "2026-11-30T10:00:00", LATEST_FLASH_OFF),
        # Friday peak, then Saturday and Sunday at the same hour are off-peak.
        ("deepseek-flash", "2026-11-27T02:00:00", LATEST_FLASH_PEAK),
        ("deepseek-flash", "2026-11-28T02:00:00", LATEST_FLASH_OFF),
        ("deepseek-flash", "2026-11-29T07:00:00", LATEST_FLASH_OFF),
        (
            "deepseek-v4-pro",
            "2026-11-30T02:00:00",
            (Decimal("0.044"), Decimal("1.32"), Decimal("3.96"), False),
        ),
        (
            "deepseek-v4-pro",
            "2026-11-30T12:00:00",
            (Decimal("0.022"), Decimal("0.66"), Decimal("1.98"), True),
        ),
        # Legacy names are billed as deepseek-flash.
        ("deepseek-v4-flash", "2026-11-30T02:00:00", LATEST_FLASH_PEAK),
        ("deepseek-v4-flash-vision-exp", "2026-11-30T12:00:00", LATEST_FLASH_OFF),
        # Historic windows: the Aug-2026 flash prices until the September cut.
        (
            "deepseek-flash",
            "2026-09-09T15:59:59",
            (Decimal("0.007"), Decimal("0.22"), Decimal("0.66"), True),
        ),
        ("deepseek-flash", "2026-09-09T16:00:00", LATEST_FLASH_OFF),
        (
            "deepseek-v4-flash",
            "2026-09-09T02:00:00",
            (Decimal("0.014"), Decimal("0.44"), Decimal("1.32"), False),
        ),
        # Before 2026-08-23 (Beijing) weekends still had peak hours.
        (
            "deepseek-v4-pro",
            "2026-08-22T02:00:00",
            (Decimal("0.044"), Decimal("1.32"), Decimal("3.96"), False),
        ),
        (
            "deepseek-v4-pro",
            "2026-08-29T02:00:00",
            (Decimal("0.022"), Decimal("0.66"), Decimal("1.98"), True),
        ),
        # V4 launch prices were flat; deepseek-chat priced as v4-flash before retiring.
        (
            "deepseek-chat",
            "2026-06-01T02:00:00",
            (Decimal("0.0028"), Decimal("0.14"), Decimal("0.28"), False),
        ),
        (
            "deepseek-v4-pro",
            "2026-08-16T15:59:59",
            (Decimal("0.003625"), Decimal("0.435"), Decimal("0.87"), False),
        ),
    ],
)
def test_builtin_prices(
    builtin: Catalogue, model: str, when: str, expected: tuple[Decimal, Decimal, Decimal, bool]
) -> None:
    assert per_million(builtin.prices_at(model, at(when))) == expected


def test_unknown_model_and_time_before_first_window(builtin: Catalogue) -> None:
    assert builtin.prices_at("gpt-4o", at("2026-11-30T02:00:00")) is None
    assert builtin.prices_at("deepseek-flash", at("2026-01-01T00:00:00")) is None


def test_other_timezones_are_converted_to_utc(builtin: Catalogue) -> None:
    beijing = datetime.fromisoformat("2026-11-30T11:59:59+08:00")  # 03:59:59 UTC, Monday
    assert per_million(builtin.prices_at("deepseek-flash", beijing)) == LATEST_FLASH_PEAK
    beijing_noon = datetime.fromisoformat("2026-11-30T12:00:00+08:00")
    assert per_million(builtin.prices_at("deepseek-flash", beijing_noon)) == LATEST_FLASH_OFF


def test_naive_datetime_is_refused(builtin: Catalogue) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        builtin.prices_at("deepseek-flash", datetime(2026, 11, 30, 2))


def test_builtin_retirements_and_names(builtin: Catalogue) -> None:
    retired = at("2026-07-24T15:59:00")
    assert builtin.retirements() == {"deepseek-chat": retired, "deepseek-reasoner": retired}
    assert builtin.canonical("deepseek-reasoner") == "deepseek-flash"
    assert builtin.canonical("deepseek-v4-pro") == "deepseek-v4-pro"
    assert builtin.canonical("nope") is None
    assert builtin.names() == {
        "deepseek-flash",
        "deepseek-v4-pro",
        "deepseek-v4-flash",
        "deepseek-v4-flash-vision-exp",
        "deepseek-chat",
        "deepseek-reasoner",
    }


GOOD = """
[schedules.night]
off_peak_multiplier = 0.25
peak_hours = { sun = ["00:00-24:00"] }

[models.m]
retires_at = "2027-01-01T00:00:00+01:00"
[[models.m.prices]]
from = 2026-01-01T00:00:00Z
cache_hit = 1
cache_miss = 2
output = 3
[[models.m.prices]]
from = "2026-06-01T00:00:00Z"
schedule = "night"
cache_hit = 4
cache_miss = 8
output = 12

[models.n]

[aliases]
old = "m"
older = { model = "m", retires_at = 2028-01-01T00:00:00Z }
early = { model = "m", retires_at = 2026-12-01T00:00:00Z }
"""


def test_operator_file(tmp_path: Path) -> None:
    path = tmp_path / "cat.toml"
    path.write_text(GOOD)
    cat = Catalogue.from_file(path)
    assert per_million(cat.prices_at("old", at("2026-05-31T23:59:59"))) == (
        Decimal(1),
        Decimal(2),
        Decimal(3),
        False,
    )
    sunday, monday = at("2026-06-07T23:59:59"), at("2026-06-08T00:00:00")
    assert per_million(cat.prices_at("m", sunday)) == (Decimal(4), Decimal(8), Decimal(12), False)
    assert per_million(cat.prices_at("m", monday)) == (
        Decimal(1),
        Decimal(2),
        Decimal(3),
        True,
    )
    assert cat.prices_at("n", monday) is None  # a model may carry no prices
    model_retires = at("2026-12-31T23:00:00")
    assert cat.retirements() == {
        "m": model_retires,
        "old": model_retires,  # an alias retires with its model
        "older": model_retires,  # ... or earlier, never later
        "early": at("2026-12-01T00:00:00"),
    }


WINDOW = (
    "[[models.m.prices]]\nfrom = 2026-01-01T00:00:00Z\ncache_hit = 1\ncache_miss = 2\noutput = 3\n"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models = 3", "models: must be a table (got 3)"),
        (
            "colour = 1",
            "colour: unknown key; expected one of aliases, models, schedules (got 'colour')",
        ),
        (
            WINDOW.replace("cache_hit = 1", 'cache_hit = "cheap"'),
            "models.m.prices[0].cache_hit: must be a number (got 'cheap')",
        ),
        (
            WINDOW.replace("output = 3", "output = -0.5"),
            "models.m.prices[0].output: must be a finite number >= 0 (got -0.5)",
        ),
        (
            WINDOW.replace("output = 3", "output = nan"),
            "models.m.prices[0].output: must be a finite number >= 0 (got NaN)",
        ),
        (
            WINDOW.replace("cache_miss = 2\n", ""),
            "models.m.prices[0].cache_miss: is required (got None)",
        ),
        (
            WINDOW.replace("2026-01-01T00:00:00Z", "2026-01-01T00:00:00"),
            "models.m.prices[0].from: must be an RFC 3339 date-time with an offset, "
            "e.g. 2026-09-09T16:00:00Z (got 2026-01-01T00:00:00)",
        ),
        (
            WINDOW.replace("2026-01-01T00:00:00Z", '"soon"'),
            "models.m.prices[0].from: must be an RFC 3339 date-time such as "
            "2026-09-09T16:00:00Z (got 'soon')",
        ),
        (
            WINDOW + WINDOW,
            "models.m.prices[1].from: windows must be in ascending order "
            "(got 2026-01-01T00:00:00+00:00)",
        ),
        (
            WINDOW + 'schedule = "peak"\n',
            "models.m.prices[0].schedule: must name a table under [schedules] (none defined) "
            "(got 'peak')",
        ),
        (
            WINDOW + "colour = 1\n",
            "models.m.prices[0].colour: unknown key; expected one of cache_hit, cache_miss, "
            "from, output, schedule (got 'colour')",
        ),
        (
            "[schedules.s]\npeak_hours = {}\n",
            "schedules.s.off_peak_multiplier: is required (got None)",
        ),
        (
            '[schedules.s]\noff_peak_multiplier = 0.5\npeak_hours = { monday = ["01:00-02:00"] }',
            "schedules.s.peak_hours.monday: unknown key; expected one of fri, mon, sat, sun, "
            "thu, tue, wed (got 'monday')",
        ),
        (
            '[schedules.s]\noff_peak_multiplier = 0.5\npeak_hours = { mon = ["04:00-01:00"] }',
            "schedules.s.peak_hours.mon: a range must end after it starts (got '04:00-01:00')",
        ),
        (
            '[schedules.s]\noff_peak_multiplier = 0.5\npeak_hours = { mon = ["1am-2am"] }',
            "schedules.s.peak_hours.mon: each range must look like \"01:00-04:00\" (got '1am-2am')",
        ),
        (
            '[schedules.s]\noff_peak_multiplier = 0.5\npeak_hours = { mon = ["00:00-24:01"] }',
            "schedules.s.peak_hours.mon: times must lie between 00:00 and 24:00 "
            "(got '00:00-24:01')",
        ),
        ('[aliases]\nold = "ghost"\n', "aliases.old: must name a model (got 'ghost')"),
        (
            WINDOW + '[aliases]\nm = "m"\n',
            "aliases.m: an alias cannot share its name with a model (got 'm')",
        ),
        (
            WINDOW + '[aliases]\nold = { model = "m", retires_at = "2026-13-01T00:00:00Z" }\n',
            "aliases.old.retires_at: must be an RFC 3339 date-time such as 2026-09-09T16:00:00Z "
            "(got '2026-13-01T00:00:00Z')",
        ),
    ],
)
def test_bad_files_name_file_key_and_value(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CatalogueError) as caught:
        Catalogue.from_file(path)
    assert str(caught.value) == f"{path}: {message}"
    assert "\n" not in str(caught.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[models\n")
    with pytest.raises(CatalogueError, match=r"broken\.toml: not valid TOML: "):
        Catalogue.from_file(path)
    with pytest.raises(CatalogueError, match=r"absent\.toml: cannot read the catalogue: "):
        Catalogue.from_file(tmp_path / "absent.toml")


def test_from_mapping_accepts_plain_floats_exactly() -> None:
    cat = Catalogue.from_mapping(
        {
            "models": {
                "m": {
                    "prices": [
                        {
                            "from": at("2026-01-01T00:00:00"),
                            "cache_hit": 0.003,
                            "cache_miss": 0.1,
                            "output": 7,
                        }
                    ]
                }
            }
        }
    )
    prices = cat.prices_at("m", at("2026-02-01T00:00:00"))
    assert per_million(prices) == (Decimal("0.003"), Decimal("0.1"), Decimal(7), False)


def test_the_documented_example_is_valid_and_its_worked_figures_hold() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "catalogue.md").read_text()
    example = doc.split("## Full example", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    cat = Catalogue.from_toml(example, source="docs/catalogue.md")
    peak = cat.prices_at("deepseek-chat", at("2026-11-30T03:59:59"))
    off = cat.prices_at("deepseek-chat", at("2026-11-30T04:00:00"))
    assert peak is not None
    assert off is not None
    assert 128 * peak.cache_hit + 872 * peak.cache_miss + 500 * peak.output == Decimal(
        "0.000862368"
    )
    assert 128 * (peak.cache_miss - peak.cache_hit) == Decimal("0.000037632")
    assert 128 * off.cache_hit + 872 * off.cache_miss + 500 * off.output == Decimal("0.000431184")
    assert cat.prices_at("local-llama", at("2026-11-30T03:00:00")) == Prices(
        Decimal(0), Decimal(0), Decimal(0)
    )
