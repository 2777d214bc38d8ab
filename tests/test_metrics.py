"""The metrics module is the single source of truth: docs and exposition are checked against it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import aiohttp

from sidecar.telemetry.specs import SPECS
from tests.conftest import RunningSidecar, require_binary
from tests.fake_upstream import FakeUpstream, fixture, json_reply, sse

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs" / "metrics.md"
CONTRACT_ROW = re.compile(r"^\| `(llm_[a-z_]+)` \| (\w+) \| ([a-z_, ]*) \|", re.M)


def test_docs_table_matches_the_code() -> None:
    documented = {
        name: (kind, tuple(label.strip() for label in labels.split(",") if label.strip()))
        for name, kind, labels in CONTRACT_ROW.findall(DOCS.read_text())
    }
    in_code = {spec.name: (spec.kind, spec.labels) for spec in SPECS}
    assert documented == in_code


def test_names_follow_the_prefix_rule() -> None:
    for spec in SPECS:
        assert spec.name.startswith("llm_"), spec.name
        if spec.kind == "counter":
            assert spec.name.endswith("_total"), spec.name
        if spec.kind == "histogram":
            assert spec.name.endswith(("_seconds", "_tokens")), spec.name


def test_buckets_cover_llm_reality() -> None:
    buckets = {spec.name: spec.buckets for spec in SPECS}
    assert max(buckets["llm_time_to_first_token_seconds"]) >= 600
    assert max(buckets["llm_upstream_queue_seconds"]) >= 600
    assert max(buckets["llm_request_duration_seconds"]) >= 1800
    tpot = buckets["llm_time_per_output_token_seconds"]
    assert min(tpot) <= 0.001 and max(tpot) >= 5


async def test_promtool_accepts_the_exposition(
    fake_upstream: tuple[FakeUpstream, str], sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    promtool = require_binary("promtool")
    fake, _ = fake_upstream
    fake.push(
        sse("deepseek-reasoner-stream.sse"), json_reply(fixture("deepseek-error-429.json"), 429)
    )
    for _ in range(2):
        async with client.post(sidecar.url + "/chat/completions", data=b'{"stream":true}') as r:
            await r.read()
    text = await sidecar.scrape()
    assert "llm_requests_total{" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_openmetrics_carries_request_id_exemplars(
    fake_upstream: tuple[FakeUpstream, str], sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    fake.push(sse("deepseek-chat-stream.sse"))
    async with client.post(
        sidecar.url + "/chat/completions", data=b"{}", headers={"x-request-id": "trace-me"}
    ) as r:
        await r.read()
    text = await sidecar.scrape("application/openmetrics-text; version=1.0.0")
    assert '# {request_id="trace-me"}' in text


REFERENCING = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "docs" / "runbooks").glob("*.md")),
    ROOT / "deploy" / "prometheus" / "rules.yml",
    ROOT / "deploy" / "prometheus" / "rules.test.yml",
    *sorted((ROOT / "dashboards").glob("*.json")),
    *sorted((ROOT / "deploy" / "k8s").glob("*.yaml")),
    *sorted((ROOT / "sidecar" / "console").glob("*.py")),
]


def test_every_metric_name_used_in_docs_rules_and_console_exists() -> None:
    known = {spec.name for spec in SPECS}
    series = known | {
        spec.name + suffix
        for spec in SPECS
        if spec.kind == "histogram"
        for suffix in ("_bucket", "_sum", "_count")
    }
    for path in REFERENCING:
        used = set(re.findall(r"(?<![:\w])(llm_[a-z_]+[a-z])\b(?!:)", path.read_text()))
        unknown = {name for name in used if name not in series and not name.endswith("_")}
        assert not unknown, f"{path.relative_to(ROOT)} uses unknown metrics {sorted(unknown)}"
