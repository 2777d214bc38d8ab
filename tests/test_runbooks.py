"""Every alert links a runbook that exists, and every runbook belongs to an alert."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RUNBOOKS = ROOT / "docs" / "runbooks"
URL = "https://github.com/deepseek-sidecar/deepseek-sidecar/blob/main/docs/runbooks/{}.md"
SECTIONS = ["## What it means", "## First look", "## Likely causes", "## What to do"]


def alerts() -> list[dict[str, Any]]:
    groups = YAML(typ="safe").load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def runbooks() -> dict[str, Path]:
    return {path.stem: path for path in RUNBOOKS.glob("*.md") if path.name != "README.md"}


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_every_alert_carries_summary_description_and_its_runbook(rule: dict[str, Any]) -> None:
    annotations = rule.get("annotations", {})
    assert annotations.get("summary"), rule["alert"]
    assert annotations.get("description"), rule["alert"]
    assert annotations.get("runbook_url") == URL.format(rule["alert"])
    assert rule["alert"] in runbooks(), f"docs/runbooks/{rule['alert']}.md is missing"
    assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}


def test_every_runbook_names_an_existing_alert() -> None:
    names = {rule["alert"] for rule in alerts()}
    orphans = sorted(set(runbooks()) - names)
    assert not orphans, f"runbooks without an alert in rules.yml: {orphans}"


@pytest.mark.parametrize("name", sorted(runbooks()))
def test_runbooks_follow_the_template(name: str) -> None:
    text = runbooks()[name].read_text()
    assert text.startswith(f"# {name}\n"), name
    positions = [text.find(f"\n{section}\n") for section in SECTIONS]
    assert -1 not in positions and positions == sorted(positions), (name, positions)
    first_look = text[positions[1] : positions[2]]
    assert "```promql" in first_look, f"{name}: no PromQL to look at first"


def test_the_index_lists_every_runbook() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    linked = set(re.findall(r"\]\((\w+)\.md\)", index))
    assert linked == set(runbooks())
