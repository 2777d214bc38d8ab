"""``deepseek-sidecar loadgen`` as a real process: simulator → sidecar ← loadgen, counted twice."""

from __future__ import annotations

import asyncio
import re
import sys

from aiohttp.test_utils import TestServer

from sidecar.console.loadgen import request_body
from sidecar.console.traffic import ChatRequest
from sidecar.simulator import build_app
from sidecar.simulator.testing import fast_scenario
from tests.conftest import RunningSidecar, SidecarFactory

TALLY = re.compile(rb"loadgen: sent (\d+), ok (\d+), 429 (\d+), other errors (\d+)")


def requests_by_code(sidecar: RunningSidecar) -> dict[str, float]:
    """``llm_requests_total`` summed over every label but ``code``."""
    totals: dict[str, float] = {}
    for metric in sidecar.registry.collect():
        for sample in metric.samples:
            if sample.name == "llm_requests_total":
                code = sample.labels["code"]
                totals[code] = totals.get(code, 0.0) + sample.value
    return totals


def test_request_body_asks_for_usage_only_on_streams() -> None:
    plain = ChatRequest("deepseek-flash", "sys", "hi", False, True, 30)
    assert b'"stream"' not in request_body(plain)
    streamed = ChatRequest("deepseek-flash", "sys", "hi", True, True, 30)
    assert b'"stream_options":{"include_usage":true}' in request_body(streamed)


async def test_loadgen_traffic_reaches_the_sidecar_and_every_request_is_counted(
    start_sidecar: SidecarFactory,
) -> None:
    # A concurrency limit of 1 (0.05 USD x 20) makes the bursts collect 429s.
    scenario = fast_scenario(initial_balance_usd=0.05, concurrency_per_usd=20)
    server = TestServer(build_app(scenario, seed=5), host="127.0.0.1")
    await server.start_server()
    try:
        sidecar = await start_sidecar(str(server.make_url("")).rstrip("/"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sidecar", "loadgen", "--base-url", sidecar.url,
            "--duration", "3", "--report-every", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, err.decode()
        tallies = TALLY.findall(out)
        assert len(tallies) >= 3, out  # one a second, and the last at exit
        sent, ok, limited, errors = (int(n) for n in tallies[-1])
        assert sent == ok + limited + errors and sent >= 15
        assert limited > 0 and errors == 0
        assert requests_by_code(sidecar) == {"200": ok, "429": limited}
    finally:
        await server.close()
