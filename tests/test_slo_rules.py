"""The SLO rules follow the multi-window, multi-burn-rate pattern and stay self-consistent.

``promtool test rules`` (tests/test_prometheus.py) checks that they fire on fast and slow burns
and stay quiet at steady state; these checks keep the parts users edit consistent.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from sidecar.telemetry.specs import SPECS

ROOT = Path(__file__).parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# Google SRE workbook, "Alerting on SLOs": (long window, short window, burn rate) per severity.
PAGE = (("1h", "5m", "14.4"), ("6h", "30m", "6"))
TICKET = (("1d", "2h", "3"), ("3d", "6h", "1"))


def slo_rules() -> list[dict[str, Any]]:
    groups = YAML(typ="safe").load(RULES.read_text())["groups"]
    (group,) = [g for g in groups if g["name"] == "deepseek-sidecar.slo"]
    rules: list[dict[str, Any]] = group["rules"]
    return rules


def test_objectives_are_ratios_users_can_edit() -> None:
    objectives = {
        rule["labels"]["slo"]: float(re.fullmatch(r"vector\((0\.\d+)\)", rule["expr"])[1])  # type: ignore[index]
        for rule in slo_rules()
        if rule.get("record") == "llm:slo_objective:ratio"
    }
    assert set(objectives) == {"availability", "ttft"}
    assert all(0.5 < value < 1 for value in objectives.values())


def test_every_window_has_a_burn_rate_for_both_objectives() -> None:
    records = {rule["record"] for rule in slo_rules() if "record" in rule}
    for slo in ("availability", "ttft"):
        for window in WINDOWS:
            assert f"upstream:llm_slo_{slo}:burnrate{window}" in records


def test_the_ttft_threshold_is_one_bucket_bound_of_the_histogram() -> None:
    exprs = " ".join(rule.get("expr", "") for rule in slo_rules())
    bounds = set(re.findall(r'llm_time_to_first_token_seconds_bucket\{le="([^"]+)"\}', exprs))
    assert len(bounds) == 1, bounds
    (spec,) = [s for s in SPECS if s.name == "llm_time_to_first_token_seconds"]
    assert float(bounds.pop()) in spec.buckets


def test_alerts_pair_windows_as_the_workbook_does() -> None:
    alerts = [rule for rule in slo_rules() if "alert" in rule]
    assert {rule["alert"] for rule in alerts} == {
        "LLMAvailabilityBudgetBurn",
        "LLMTimeToFirstTokenBudgetBurn",
    }
    for rule in alerts:
        pairs = PAGE if rule["labels"]["severity"] == "critical" else TICKET
        found = re.findall(
            r"burnrate(\w+) > ([\d.]+) and \S+:burnrate(\w+) > ([\d.]+)", rule["expr"]
        )
        assert [(long, short, rate) for long, rate, short, again in found if rate == again] == [
            *pairs
        ], rule["expr"]
