"""Scenario: every knob of the simulator in one frozen dataclass, loaded from TOML.

Named scenarios ship as ``scenarios/<name>.toml`` next to this module; a path to any other TOML
file works the same way. Keys override the defaults below; an unknown key or a value of the wrong
type is an error that names the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.settings import DEFAULT_MODELS

SCENARIO_DIR = Path(__file__).parent / "scenarios"


class ScenarioError(ValueError):
    """A scenario name, file or key that cannot be used; the message names the culprit."""


@dataclass(frozen=True)
class Scenario:
    """Knobs of the simulated upstream. Durations end in ``_s``; rates are probabilities 0..1."""

    flavour: str = "deepseek"
    models: tuple[str, ...] = DEFAULT_MODELS
    # Output length, in tokens, drawn per request (then capped by max_tokens).
    min_output_tokens: int = 8
    max_output_tokens: int = 64
    min_reasoning_tokens: int = 8
    max_reasoning_tokens: int = 48
    chars_per_token: int = 4
    # Prefix cache: hits come in whole units of this many tokens.
    cache_unit: int = 64
    cache_enabled: bool = True
    cache_max_prefixes: int = 100_000
    # Latency: TTFT = base + prefill per uncached token, times (1 + penalty * load) ± jitter.
    ttft_base_s: float = 0.2
    prefill_s_per_token: float = 0.000_02
    decode_s_per_token: float = 0.02
    concurrency_penalty: float = 0.25
    jitter: float = 0.1
    # Capacity: above soft_capacity requests in service, new ones queue with keep-alives.
    soft_capacity: int = 64
    keepalive_interval_s: float = 1.0
    # Accounts: balance in USD per API key; the concurrency limit follows the balance.
    initial_balance_usd: float = 10.0
    granted_balance_usd: float = 0.0
    concurrency_per_usd: float = 20.0
    min_concurrency: int = 1
    max_concurrency: int = 2500
    price_multiplier: float = 1.0
    # Faults, by rate per request.
    error_500_rate: float = 0.0
    error_503_rate: float = 0.0
    abort_rate: float = 0.0
    stall_rate: float = 0.0
    stall_s: float = 2.0
    # OpenAI flavour: fixed one-minute windows per key.
    rpm_limit: int = 500
    tpm_limit: int = 2_000_000
    # Outage: from outage_start_s after start, every request gets outage_status at once for
    # outage_s seconds, again every outage_every_s (0 = once); outage_s 0 = never.
    outage_status: int = 503
    outage_start_s: float = 0.0
    outage_s: float = 0.0
    outage_every_s: float = 0.0
    # Authentication: when False, a request without a key is still served (key "anonymous").
    require_auth: bool = True

    def replace(self, **changes: Any) -> Scenario:
        """Return a copy with some knobs changed (tests use this for tiny latencies)."""
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(Scenario)}
_DEFAULTS = Scenario()


def _coerce(key: str, value: Any) -> Any:
    """Check one TOML value against the type of the default for ``key``."""
    default = getattr(_DEFAULTS, key)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ScenarioError(f"scenario key {key!r}: bad value {value!r}")
    return value


def from_mapping(data: dict[str, Any], base: Scenario | None = None) -> Scenario:
    """Apply ``data`` over ``base`` (the defaults when None), validating every key."""
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _FIELDS:
            raise ScenarioError(f"scenario key {key!r}: unknown key")
        changes[key] = _coerce(key, value)
    scenario = dataclasses.replace(base or _DEFAULTS, **changes)
    if scenario.flavour not in ("deepseek", "openai"):
        raise ScenarioError(f"scenario key 'flavour': bad value {scenario.flavour!r}")
    if scenario.cache_unit < 1 or scenario.chars_per_token < 1 or scenario.soft_capacity < 1:
        raise ScenarioError("scenario keys cache_unit, chars_per_token, soft_capacity must be >= 1")
    if scenario.outage_status not in (429, 500, 502, 503, 504):
        raise ScenarioError(
            f"scenario key 'outage_status': bad value {scenario.outage_status!r} (429 or 5xx)"
        )
    if scenario.outage_every_s and scenario.outage_every_s <= scenario.outage_s:
        raise ScenarioError("scenario key 'outage_every_s': must be longer than outage_s")
    return scenario


def named_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str) -> Scenario:
    """Load a named scenario or a TOML file; raises ScenarioError with a one-line reason."""
    path = Path(name_or_path)
    if not path.suffix and (SCENARIO_DIR / f"{name_or_path}.toml").is_file():
        path = SCENARIO_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        names = ", ".join(named_scenarios())
        raise ScenarioError(f"scenario {name_or_path!r}: no such name or file (names: {names})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"scenario file {str(path)!r}: {exc}") from exc
    return from_mapping(data)


__all__ = ["DEFAULT_MODELS", "Scenario", "ScenarioError", "from_mapping", "load_scenario"]
