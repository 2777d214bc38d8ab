"""Both dashboards are valid Grafana dashboards: schema round trip, ids, layout, descriptions."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import orjson
import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

ROOT = Path(__file__).parent.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
CAPACITY = ROOT / "dashboards" / "deepseek-capacity.json"
# Grafana writes `definition` (the query as shown) on query variables; the SDK does not model it.
NOT_MODELLED = {("templating", "list", "definition")}


def lost(source: Any, decoded: Any, path: tuple[str, ...] = ()) -> list[str]:
    """Keys or values of ``source`` that the SDK's model dropped or changed."""
    if isinstance(source, dict) and isinstance(decoded, dict):
        out = []
        for key, value in source.items():
            if key not in decoded:
                if (*[p for p in path if not p.isdigit()], key) not in NOT_MODELLED:
                    out.append("/".join((*path, key)))
            else:
                out += lost(value, decoded[key], (*path, key))
        return out
    if isinstance(source, list) and isinstance(decoded, list) and len(source) == len(decoded):
        return [d for i, (a, b) in enumerate(zip(source, decoded, strict=True))
                for d in lost(a, b, (*path, str(i)))]  # fmt: skip
    return [] if source == decoded else ["/".join(path)]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_the_grafana_sdk_models_keep_every_field(path: Path) -> None:
    register_default_plugins()
    source = orjson.loads(path.read_bytes())
    decoded = orjson.loads(JSONEncoder().encode(Dashboard.from_json(source)))
    assert not lost(source, decoded)
    assert all(type(t).__name__ == "Dataquery" for p in Dashboard.from_json(source).panels or []
               for t in getattr(p, "targets", None) or [])  # fmt: skip


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panel_ids_are_unique_and_panels_do_not_overlap(path: Path) -> None:
    panels = orjson.loads(path.read_bytes())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, (panel["title"], taken.get((x, y)))
                taken[(x, y)] = panel["title"]


def test_every_capacity_panel_says_what_it_shows() -> None:
    for panel in orjson.loads(CAPACITY.read_bytes())["panels"]:
        if panel["type"] != "row":
            assert len(panel.get("description", "")) > 40, panel["title"]
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"


def test_the_committed_capacity_dashboard_is_the_generated_one() -> None:
    generator = runpy.run_path(str(ROOT / "dashboards" / "capacity.py"))
    assert CAPACITY.read_text() == generator["render"](), "run python dashboards/capacity.py"
