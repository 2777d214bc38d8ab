"""The model catalogue: prices over time, legacy names and retirement dates.

Pure data, no I/O beyond reading the TOML file. Prices are kept as ``Decimal`` so that a price
written as ``0.003`` is exactly 0.003 USD per 1M tokens; floats appear only when a cost is
finally reported. The format is documented in ``docs/catalogue.md``; the built-in file is
``sidecar/accounting/catalogue.toml``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from sidecar.accounting.prices import US_PER_SECOND, Model, Prices, PriceWindow, Schedule

__all__ = [
    "Catalogue",
    "CatalogueError",
    "Model",
    "PriceWindow",
    "Prices",
    "Schedule",
]


class CatalogueError(ValueError):
    """A catalogue file that cannot be used; the message is one line naming file, key and value."""


class Catalogue:
    """Models by name, plus aliases (legacy names) that are priced as another model."""

    def __init__(
        self,
        models: Mapping[str, Model],
        aliases: Mapping[str, str] | None = None,
        alias_retirements: Mapping[str, datetime] | None = None,
    ) -> None:
        self._models = dict(models)
        self._aliases = dict(aliases or {})
        self._alias_retirements = dict(alias_retirements or {})

    @classmethod
    def builtin(cls) -> Catalogue:
        """The catalogue shipped with the sidecar (current and historic DeepSeek prices)."""
        source = resources.files("sidecar.accounting").joinpath("catalogue.toml")
        return cls.from_toml(source.read_text(encoding="utf-8"), source="catalogue.toml (built-in)")

    @classmethod
    def from_file(cls, path: str | Path) -> Catalogue:
        """Read a catalogue file; any problem raises ``CatalogueError`` naming the file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise CatalogueError(f"{path}: cannot read the catalogue: {reason}") from None
        return cls.from_toml(text, source=str(path))

    @classmethod
    def from_toml(cls, text: str, source: str = "<catalogue>") -> Catalogue:
        """Parse TOML text; ``source`` names it in error messages."""
        try:
            data = tomllib.loads(text, parse_float=Decimal)
        except tomllib.TOMLDecodeError as exc:
            raise CatalogueError(f"{source}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<catalogue>") -> Catalogue:
        """Build from an already parsed TOML table (e.g. a ``[catalogue]`` table of a config)."""
        try:
            models, aliases, retirements = _parse(data)
        except _Bad as bad:
            raise CatalogueError(f"{source}: {bad}") from None
        return cls(models, aliases, retirements)

    def canonical(self, name: str) -> str | None:
        """The model that prices ``name`` (itself, or an alias's target); None if unknown."""
        if name in self._models:
            return name
        return self._aliases.get(name)

    def prices_at(self, model: str, at: datetime) -> Prices | None:
        """Per-token prices for ``model`` (or alias) at ``at`` (timezone-aware).

        None when the model is unknown or ``at`` precedes its first price window.
        """
        if at.tzinfo is None:
            raise ValueError("prices_at needs a timezone-aware datetime")
        canonical = self.canonical(model)
        if canonical is None:
            return None
        in_force = None
        for window in self._models[canonical].windows:
            if window.starts > at:
                break
            in_force = window
        return None if in_force is None else in_force.prices_at(at)

    def retirements(self) -> dict[str, datetime]:
        """Every model or alias name with a retirement date (an alias retires with its model)."""
        found = {n: m.retires_at for n, m in self._models.items() if m.retires_at is not None}
        for alias, target in self._aliases.items():
            dates = [d for d in (self._alias_retirements.get(alias), found.get(target)) if d]
            if dates:
                found[alias] = min(dates)
        return found

    def names(self) -> frozenset[str]:
        """Every model and alias name the catalogue knows."""
        return frozenset(self._models) | frozenset(self._aliases)


# --- parsing: every check names the key path and the bad value -------------------------------

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TOP_KEYS = frozenset({"schedules", "models", "aliases"})
_SCHEDULE_KEYS = frozenset({"off_peak_multiplier", "peak_hours"})
_MODEL_KEYS = frozenset({"prices", "retires_at"})
_WINDOW_KEYS = frozenset({"from", "schedule", "cache_hit", "cache_miss", "output"})
_ALIAS_KEYS = frozenset({"model", "retires_at"})


class _Bad(Exception):
    """One problem at one key; ``str()`` is the message without the file name."""


def _fail(key: str, problem: str, value: object) -> NoReturn:
    shown = value.isoformat() if isinstance(value, datetime) else repr(value)
    if isinstance(value, Decimal):
        shown = str(value)
    raise _Bad(f"{key}: {problem} (got {shown})")


def _table(value: object, key: str, allowed: frozenset[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(key, "must be a table", value)
    for name in value:
        if allowed is not None and name not in allowed:
            where = f"{key}.{name}" if key else name
            _fail(where, f"unknown key; expected one of {', '.join(sorted(allowed))}", name)
    return value


def _number(value: object, key: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        _fail(key, "must be a number", value)
    # str() of a float is its shortest round-trip form, so 0.003 stays exactly 0.003.
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite() or number < 0:
        _fail(key, "must be a finite number >= 0", value)
    return number


def _instant(value: object, key: str) -> datetime:
    parsed = value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            _fail(key, "must be an RFC 3339 date-time such as 2026-09-09T16:00:00Z", value)
    if not isinstance(parsed, datetime) or parsed.tzinfo is None:
        _fail(key, "must be an RFC 3339 date-time with an offset, e.g. 2026-09-09T16:00:00Z", value)
    return parsed.astimezone(UTC)


def _clock(text: str, key: str, whole: str) -> int:
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        _fail(key, 'each range must look like "01:00-04:00"', whole)
    total = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or total > 24 * 60:
        _fail(key, "times must lie between 00:00 and 24:00", whole)
    return total * 60 * US_PER_SECOND


def _ranges(value: object, key: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list):
        _fail(key, 'must be a list of "HH:MM-HH:MM" ranges', value)
    ranges = []
    for item in value:
        if not isinstance(item, str) or item.count("-") != 1:
            _fail(key, 'each range must look like "01:00-04:00"', item)
        start_text, end_text = item.split("-")
        start, end = _clock(start_text, key, item), _clock(end_text, key, item)
        if start >= end:
            _fail(key, "a range must end after it starts", item)
        ranges.append((start, end))
    return tuple(ranges)


def _schedule(value: object, key: str) -> Schedule:
    table = _table(value, key, _SCHEDULE_KEYS)
    if "off_peak_multiplier" not in table:
        _fail(f"{key}.off_peak_multiplier", "is required", None)
    multiplier = _number(table["off_peak_multiplier"], f"{key}.off_peak_multiplier")
    hours = _table(table.get("peak_hours", {}), f"{key}.peak_hours", frozenset(_WEEKDAYS))
    return Schedule(
        off_peak_multiplier=multiplier,
        peak_ranges=tuple(_ranges(hours.get(d, []), f"{key}.peak_hours.{d}") for d in _WEEKDAYS),
    )


def _window(value: object, key: str, schedules: Mapping[str, Schedule]) -> PriceWindow:
    table = _table(value, key, _WINDOW_KEYS)
    for required in ("from", "cache_hit", "cache_miss", "output"):
        if required not in table:
            _fail(f"{key}.{required}", "is required", None)
    schedule = None
    if "schedule" in table:
        name = table["schedule"]
        if not isinstance(name, str) or name not in schedules:
            known = ", ".join(sorted(schedules)) or "none defined"
            _fail(f"{key}.schedule", f"must name a table under [schedules] ({known})", name)
        schedule = schedules[name]
    return PriceWindow(
        starts=_instant(table["from"], f"{key}.from"),
        cache_hit=_number(table["cache_hit"], f"{key}.cache_hit"),
        cache_miss=_number(table["cache_miss"], f"{key}.cache_miss"),
        output=_number(table["output"], f"{key}.output"),
        schedule=schedule,
    )


def _model(value: object, key: str, schedules: Mapping[str, Schedule]) -> Model:
    table = _table(value, key, _MODEL_KEYS)
    raw_windows = table.get("prices", [])
    if not isinstance(raw_windows, list):
        _fail(f"{key}.prices", "must be an array of tables ([[...prices]])", raw_windows)
    windows: list[PriceWindow] = []
    for index, raw in enumerate(raw_windows):
        window = _window(raw, f"{key}.prices[{index}]", schedules)
        if windows and window.starts <= windows[-1].starts:
            _fail(f"{key}.prices[{index}].from", "windows must be in ascending order", raw["from"])
        windows.append(window)
    retires = table.get("retires_at")
    retires_at = None if retires is None else _instant(retires, f"{key}.retires_at")
    return Model(tuple(windows), retires_at)


def _parse(
    data: Mapping[str, Any],
) -> tuple[dict[str, Model], dict[str, str], dict[str, datetime]]:
    top = _table(dict(data), "", _TOP_KEYS)
    schedules = {
        name: _schedule(raw, f"schedules.{name}")
        for name, raw in _table(top.get("schedules", {}), "schedules").items()
    }
    models = {
        name: _model(raw, f"models.{name}", schedules)
        for name, raw in _table(top.get("models", {}), "models").items()
    }
    aliases: dict[str, str] = {}
    retirements: dict[str, datetime] = {}
    for name, raw in _table(top.get("aliases", {}), "aliases").items():
        key = f"aliases.{name}"
        entry = {"model": raw} if isinstance(raw, str) else _table(raw, key, _ALIAS_KEYS)
        target = entry.get("model")
        if name in models:
            _fail(key, "an alias cannot share its name with a model", name)
        if not isinstance(target, str) or target not in models:
            _fail(key if isinstance(raw, str) else f"{key}.model", "must name a model", target)
        aliases[name] = target
        if "retires_at" in entry:
            retirements[name] = _instant(entry["retires_at"], f"{key}.retires_at")
    return models, aliases, retirements
