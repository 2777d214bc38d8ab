"""Exact accounting under concurrency: every exchange counted once, every token once.

A burst of mixed requests (streams and not, injected 503s and mid-stream aborts) goes through
the sidecar to the simulator at once. What the clients saw, request by request, must add up to
what the metrics and the log say.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from sidecar.simulator import build_app
from sidecar.simulator.testing import fast_scenario
from tests.conftest import SidecarFactory

N = 120
PROMPT = "Tell me about prefix caches. " * 30


def usage_in_stream(raw: bytes) -> dict[str, Any] | None:
    found = None
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: {") and b'"usage":{' in event:
            found = orjson.loads(event[6:])["usage"]
    return found


async def one(
    session: aiohttp.ClientSession, url: str, n: int, rng: random.Random
) -> dict[str, Any]:
    stream = rng.random() < 0.6
    body: dict[str, Any] = {
        "model": rng.choice(["deepseek-flash", "deepseek-v4-pro", "deepseek-chat"]),
        "messages": [{"role": "user", "content": PROMPT + str(n % 7)}],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    headers = {"Authorization": "Bearer sk-accounting"}
    try:
        async with session.post(
            url + "/chat/completions", data=orjson.dumps(body), headers=headers
        ) as r:
            raw = await r.read()
    except aiohttp.ClientPayloadError:
        return {"seen": "broken", "usage": None}
    if r.status != 200:
        return {"seen": str(r.status), "usage": None}
    usage = usage_in_stream(raw) if stream else orjson.loads(raw)["usage"]
    return {"seen": "200", "usage": usage}


async def test_every_exchange_and_token_is_counted_exactly_once(
    start_sidecar: SidecarFactory,
) -> None:
    scenario = fast_scenario(
        abort_rate=0.15,
        error_503_rate=0.1,
        soft_capacity=10,
        initial_balance_usd=1000,
        decode_s_per_token=0.002,
    )
    server = TestServer(build_app(scenario, seed=11), host="127.0.0.1")
    await server.start_server()
    sidecar = await start_sidecar(str(server.make_url("")).rstrip("/"))
    rng = random.Random(5)
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(one(session, sidecar.url, n, rng) for n in range(N)))
    await server.close()

    seen = Counter(result["seen"] for result in results)
    assert seen["200"] > N // 2 and seen["broken"] > 0 and seen["503"] > 0  # all paths ran
    assert sum(seen.values()) == N

    lines = sidecar.exchanges()
    assert len(lines) == N and len({line["request_id"] for line in lines}) == N
    outcomes = Counter(line["outcome"] for line in lines)
    assert outcomes == {"completed": seen["200"] + seen["503"], "upstream_aborted": seen["broken"]}

    families = {m.name: m for m in sidecar.registry.collect()}
    requests = sum(s.value for s in families["llm_requests"].samples if s.name.endswith("_total"))
    assert requests == N
    in_flight = sum(s.value for s in families["llm_in_flight_requests"].samples)
    assert in_flight == 0

    def tokens(kind: str) -> float:
        return sum(
            s.value
            for s in families["llm_tokens"].samples
            if s.name.endswith("_total") and s.labels["type"] == kind
        )

    completed = [r["usage"] for r in results if r["usage"] is not None]
    assert len(completed) == seen["200"]
    assert tokens("input") == sum(u["prompt_tokens"] for u in completed)
    assert tokens("output") == sum(u["completion_tokens"] for u in completed)
    assert tokens("cache_hit") == sum(u["prompt_cache_hit_tokens"] for u in completed)
    assert tokens("cache_miss") == sum(u["prompt_cache_miss_tokens"] for u in completed)
    missing = sum(
        s.value for s in families["llm_usage_missing"].samples if s.name.endswith("_total")
    )
    assert missing == seen["broken"]
