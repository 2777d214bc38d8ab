"""Scenario loading: named files, overrides, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.simulator.scenario import Scenario, ScenarioError, load_scenario, named_scenarios

ROOT = Path(__file__).resolve().parent.parent


def test_named_scenarios_load() -> None:
    names = named_scenarios()
    for required in ("steady", "burst", "degraded", "cache-friendly", "cache-hostile"):
        assert required in names
    for name in names:
        assert isinstance(load_scenario(name), Scenario)
    assert load_scenario("degraded").error_503_rate > 0
    assert load_scenario("cache-hostile").cache_enabled is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n", "scenario key 'colour': unknown key"),
        ("soft_capacity = 'many'\n", "scenario key 'soft_capacity': bad value 'many'"),
        ("flavour = 'anthropic'\n", "scenario key 'flavour': bad value 'anthropic'"),
        ("cache_enabled = 1\n", "scenario key 'cache_enabled': bad value 1"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    assert str(info.value) == message


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("ttft_base_s = 1\nmodels = ['m1']\n")
    scenario = load_scenario(str(path))
    assert scenario.ttft_base_s == 1.0 and scenario.models == ("m1",)
    assert scenario.cache_unit == Scenario().cache_unit


def test_cli_unknown_key_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("bogus = true\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "simulate", "--scenario", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "scenario key 'bogus': unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
