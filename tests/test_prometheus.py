"""A real Prometheus server scrapes a real sidecar; real promtool checks the rules."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from time import monotonic
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import RunningSidecar, SidecarFactory, closed_port, require_binary
from tests.fake_upstream import FakeUpstream, sse

ROOT = Path(__file__).parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "dashboards" / "deepseek-sidecar.json"
CAPACITY = ROOT / "dashboards" / "deepseek-capacity.json"
PROMQL_BLOCK = re.compile(r"```promql\n(.*?)```", re.S)
# What Grafana substitutes before a query reaches Prometheus ("All" selected).
GRAFANA_VARIABLES = {"$upstream": ".*", "$model": ".*", "$__rate_interval": "1m", "$__range": "1h"}


def runbook_queries() -> list[str]:
    """Each query of the runbooks' PromQL blocks (comment lines separate queries in a block)."""
    queries = []
    for path in sorted((ROOT / "docs" / "runbooks").glob("*.md")):
        for block in PROMQL_BLOCK.findall(path.read_text()):
            queries += [q.strip() for q in re.split(r"(?m)^#.*$", block) if q.strip()]
    return queries


def dashboard_queries(dashboard: Path = DASHBOARD) -> list[str]:
    panels = orjson.loads(dashboard.read_bytes())["panels"]
    queries = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append(expr)
    return queries


def test_dashboard_layout_is_well_formed() -> None:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "upstream", "model"}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    assert len(dashboard_queries()) >= 20


def test_promtool_checks_the_rules() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", "rules.test.yml"],
        capture_output=True,
        timeout=60,
        cwd=RULES.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
async def sidecar_with_limits(
    fake_upstream: tuple[FakeUpstream, str], start_sidecar: SidecarFactory
) -> RunningSidecar:
    _, url = fake_upstream
    result: RunningSidecar = await start_sidecar(url, limit_concurrency=500, limit_rpm=5000)
    return result


@pytest.fixture
async def prometheus(sidecar_with_limits: RunningSidecar, tmp_path: Path) -> AsyncIterator[str]:
    binary = require_binary("prometheus")
    target = sidecar_with_limits.admin_url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        f"  - job_name: sidecar\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = closed_port()  # free now; Prometheus binds it next
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()


async def query(base: str, expr: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as client,
        client.get(base + "/api/v1/query", params={"query": expr}) as response,
    ):
        result: dict[str, Any] = await response.json()
        return result


async def eventually(base: str, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = monotonic() + timeout
    while monotonic() < deadline:
        try:
            result = await query(base, expr)
        except aiohttp.ClientConnectionError:
            result = {}
        if result.get("status") == "success" and result["data"]["result"]:
            data: list[dict[str, Any]] = result["data"]["result"]
            return data
        await asyncio.sleep(0.5)
    raise AssertionError(f"no data for {expr!r}")


async def test_prometheus_scrapes_the_sidecar_and_runs_every_documented_query(
    fake_upstream: tuple[FakeUpstream, str], sidecar_with_limits: RunningSidecar, prometheus: str
) -> None:
    fake, _ = fake_upstream
    fake.push(*(sse("deepseek-chat-stream.sse") for _ in range(3)))
    async with aiohttp.ClientSession() as client:
        for _ in range(3):
            async with client.post(sidecar_with_limits.url + "/chat/completions", data=b"{}") as r:
                await r.read()
    (sample,) = await eventually(prometheus, 'sum(llm_requests_total{model="deepseek-chat"})')
    assert sample["value"][1] == "3"
    (hits,) = await eventually(prometheus, 'sum(llm_tokens_total{type="cache_hit"})')
    assert hits["value"][1] == str(3 * 1152)
    (ratio,) = await eventually(prometheus, "upstream:llm_concurrency_utilisation:ratio")
    assert ratio["metric"]["upstream"] == "deepseek" and ratio["value"][1] == "0"
    documented = PROMQL_BLOCK.findall((ROOT / "docs" / "capacity-planning.md").read_text())
    queries = documented + runbook_queries() + dashboard_queries() + dashboard_queries(CAPACITY)
    for expr in queries:
        result = await query(prometheus, expr)
        assert result["status"] == "success", (expr, result)
    (in_flight,) = await eventually(prometheus, dashboard_queries()[2])  # the "In flight" stat
    assert in_flight["value"][1] == "0"
