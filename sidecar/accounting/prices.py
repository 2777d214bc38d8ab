"""Prices in force: per-token USD prices, peak/off-peak schedules and price windows.

Pure values, no I/O. Kept as ``Decimal`` so that a price written as ``0.003`` is exactly 0.003
USD per 1M tokens; floats appear only when a cost is finally reported.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

__all__ = ["Model", "PriceWindow", "Prices", "Schedule"]

_PER_MILLION = Decimal(1_000_000)  # catalogue prices are quoted per 1M tokens
US_PER_SECOND = 1_000_000
_US_PER_DAY = 86_400 * US_PER_SECOND


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per single token in force at one instant (already multiplied for off-peak)."""

    cache_hit: Decimal
    cache_miss: Decimal
    output: Decimal
    off_peak: bool = False


@dataclass(frozen=True, slots=True)
class Schedule:
    """Peak hours per weekday (UTC, Monday = 0) and the multiplier applied outside them.

    Each range is ``(start_us, end_us)`` in microseconds since midnight, end exclusive, so
    03:59:59.999999 is inside "01:00-04:00" and 04:00:00 is not.
    """

    off_peak_multiplier: Decimal
    peak_ranges: tuple[tuple[tuple[int, int], ...], ...]  # 7 entries, Monday first

    def is_peak(self, at: datetime) -> bool:
        at = at.astimezone(UTC)
        of_day = (
            (at.hour * 3600 + at.minute * 60 + at.second) * US_PER_SECOND + at.microsecond
        ) % _US_PER_DAY
        return any(start <= of_day < end for start, end in self.peak_ranges[at.weekday()])


@dataclass(frozen=True, slots=True)
class PriceWindow:
    """Prices (USD per 1M tokens, full rate) in force from ``starts`` until the next window."""

    starts: datetime
    cache_hit: Decimal
    cache_miss: Decimal
    output: Decimal
    schedule: Schedule | None = None

    def prices_at(self, at: datetime) -> Prices:
        off_peak = self.schedule is not None and not self.schedule.is_peak(at)
        factor = self.schedule.off_peak_multiplier if off_peak and self.schedule else Decimal(1)
        return _per_token(self.cache_hit, self.cache_miss, self.output, factor, off_peak)


@functools.lru_cache(maxsize=1024)  # a few windows x peak/off-peak: computed once, not per request
def _per_token(
    cache_hit: Decimal, cache_miss: Decimal, output: Decimal, factor: Decimal, off_peak: bool
) -> Prices:
    return Prices(
        cache_hit=cache_hit * factor / _PER_MILLION,
        cache_miss=cache_miss * factor / _PER_MILLION,
        output=output * factor / _PER_MILLION,
        off_peak=off_peak,
    )


@dataclass(frozen=True, slots=True)
class Model:
    """One priced model: its windows in ascending ``starts`` order, and when it retires."""

    windows: tuple[PriceWindow, ...] = ()
    retires_at: datetime | None = None
