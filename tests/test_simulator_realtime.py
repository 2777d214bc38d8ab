"""The simulator's realtime endpoint, driven by the official SDK through the sidecar."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from sidecar.simulator import build_app
from sidecar.simulator.testing import fast_scenario
from tests.conftest import SidecarFactory

SYSTEM = "You answer operations questions precisely. " * 40  # ~430 tokens: several cache units


async def converse(client: AsyncOpenAI, model: str) -> list[dict[str, Any]]:
    """A system prompt and two turns; the ``response.done`` events, as dicts."""
    done = []
    async with client.realtime.connect(model=model) as connection:
        items = [("system", SYSTEM), ("user", "How deep is the queue?"), ("user", "Why?")]
        for role, text in items:
            await connection.conversation.item.create(
                item={
                    "type": "message",
                    "role": role,
                    "content": [{"type": "input_text", "text": text}],
                }
            )
            if role == "system":
                continue
            await connection.response.create()
            async for event in connection:
                assert event.type != "error", event
                if event.type == "response.done":
                    done.append(event.model_dump())
                    break
    return done


async def test_sessions_bill_the_conversation_with_cache_hits(
    start_sidecar: SidecarFactory,
) -> None:
    server = TestServer(build_app(fast_scenario(), seed=1), host="127.0.0.1")
    await server.start_server()
    try:
        sidecar = await start_sidecar(str(server.make_url("")).rstrip("/"))
        client = AsyncOpenAI(base_url=sidecar.url, api_key="sk-test", max_retries=0)
        first, second = await converse(client, "deepseek-flash")
        await client.close()
    finally:
        await server.close()
    usages = [done["response"]["usage"] for done in (first, second)]
    assert usages[0]["input_token_details"]["cached_tokens"] == 0
    assert usages[1]["input_token_details"]["cached_tokens"] >= 384  # the first turn, cached
    assert usages[1]["input_tokens"] > usages[0]["input_tokens"] + usages[0]["output_tokens"] - 1
    labels = {"upstream": "deepseek", "model": "deepseek-flash"}
    assert sidecar.value("llm_tokens_total", type="input", **labels) == sum(
        u["input_tokens"] for u in usages
    )
    assert sidecar.value("llm_tokens_total", type="cache_hit", **labels) == sum(
        u["input_token_details"]["cached_tokens"] for u in usages
    )
    assert sidecar.value("llm_cost_usd_total", type="output", **labels) > 0


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("?model=deepseek-flash", {}, 401),
        ("?model=no-such-model", {"Authorization": "Bearer sk-test"}, 400),
    ],
)
async def test_handshakes_are_refused_like_requests(
    query: str, headers: dict[str, str], status: int
) -> None:
    server = TestServer(build_app(fast_scenario(), seed=1), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(server.make_url("/v1/realtime" + query), headers=headers)
            assert refused.value.status == status
    finally:
        await server.close()
