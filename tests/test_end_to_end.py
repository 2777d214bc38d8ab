"""The whole chain as a user runs it: openai SDK → sidecar → the DeepSeek simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer

from sidecar.simulator import build_app
from sidecar.simulator.testing import fast_scenario
from tests.conftest import RunningSidecar, SidecarFactory

SYSTEM = "You are a meticulous assistant. " * 40  # ~1,300 characters: several cache units


async def simulator(**knobs: Any) -> TestServer:
    server = TestServer(build_app(fast_scenario(**knobs), seed=7), host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def chain(start_sidecar: SidecarFactory) -> AsyncIterator[tuple[RunningSidecar, Any]]:
    # 0.05 USD x 20 per USD = a concurrency limit of 1; soft capacity 1 queues the rest
    server = await simulator(initial_balance_usd=0.05, concurrency_per_usd=20, soft_capacity=1)
    sidecar = await start_sidecar(str(server.make_url("")).rstrip("/"))
    client = openai.AsyncOpenAI(base_url=sidecar.url, api_key="sk-e2e", max_retries=0)
    yield sidecar, client
    await client.close()
    await server.close()


def messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


async def test_usage_and_cache_hits_match_what_the_simulator_billed(
    chain: tuple[RunningSidecar, Any],
) -> None:
    sidecar, client = chain
    first = await client.chat.completions.create(model="deepseek-chat", messages=messages("a?"))
    stream = await client.chat.completions.create(
        model="deepseek-chat",
        messages=messages("b?"),
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
    assert first.usage is not None and usage is not None
    labels = {"upstream": "deepseek", "model": "deepseek-chat"}
    assert sidecar.value("llm_tokens_total", type="input", **labels) == (
        first.usage.prompt_tokens + usage.prompt_tokens
    )
    assert sidecar.value("llm_tokens_total", type="output", **labels) == (
        first.usage.completion_tokens + usage.completion_tokens
    )
    hits = usage.model_extra["prompt_cache_hit_tokens"]  # the shared system prompt was cached
    assert hits > 0 and hits % 64 == 0
    assert sidecar.value("llm_tokens_total", type="cache_hit", **labels) == hits
    assert (
        sidecar.value(
            "llm_time_to_first_token_seconds_count",
            upstream="deepseek",
            route="chat_completions",
            model="deepseek-chat",
        )
        == 1
    )
    assert sidecar.value("llm_cost_usd_total", type="output", **labels) > 0


async def test_a_burst_shows_429s_with_the_reported_limit(
    chain: tuple[RunningSidecar, Any],
) -> None:
    sidecar, client = chain

    async def ask(n: int) -> str:
        try:
            await client.chat.completions.create(
                model="deepseek-flash", messages=messages(f"q{n}"), max_tokens=8
            )
        except openai.RateLimitError:
            return "429"
        return "ok"

    results = await asyncio.gather(*(ask(n) for n in range(6)))
    assert "429" in results and "ok" in results
    assert (
        sidecar.value("llm_upstream_concurrency_limit", upstream="deepseek", source="reported") == 1
    )
    assert sidecar.requests(
        route="chat_completions",
        model="deepseek-flash",
        stream="false",
        code="429",
        outcome="completed",
    ) == results.count("429")


async def test_queueing_under_capacity_is_measured(start_sidecar: SidecarFactory) -> None:
    server = await simulator(soft_capacity=1, decode_s_per_token=0.01, keepalive_interval_s=0.01)
    sidecar = await start_sidecar(str(server.make_url("")).rstrip("/"))
    client = openai.AsyncOpenAI(base_url=sidecar.url, api_key="sk-e2e", max_retries=0)

    async def stream(n: int) -> str:
        text = ""
        response = await client.chat.completions.create(
            model="deepseek-v4-pro", messages=messages(f"q{n}"), stream=True
        )
        async for chunk in response:
            if chunk.choices:
                delta = chunk.choices[0].delta
                text += (delta.content or "") + (getattr(delta, "reasoning_content", None) or "")
        return text

    texts = await asyncio.gather(*(stream(n) for n in range(3)))
    await client.close()
    await server.close()
    assert all(texts)  # keep-alive comments never reached the SDK as content
    labels = {"upstream": "deepseek", "route": "chat_completions", "model": "deepseek-v4-pro"}
    assert sidecar.value("llm_upstream_queue_seconds_count", **labels) >= 1
    assert sidecar.value("llm_time_to_first_token_seconds_count", **labels) == 3
    assert (
        sidecar.value(
            "llm_tokens_total", upstream="deepseek", model="deepseek-v4-pro", type="reasoning"
        )
        > 0
    )
