"""Simulator behaviour: usage arithmetic, cache units, limits, queueing, balance, faults, seeds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sidecar.simulator import Scenario, build_app
from sidecar.simulator.testing import data_objects, fast_scenario

Client = TestClient[web.Request, web.Application]
AUTH = {"Authorization": "Bearer sk-test"}


async def make_client(aiohttp_client: Any, scenario: Scenario, seed: int = 1) -> Client:
    client: Client = await aiohttp_client(build_app(scenario, seed))
    return client


def body(user: str = "hi", system: str | None = None, stream: bool = False, **extra: Any) -> bytes:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    return orjson.dumps(
        {"model": "deepseek-flash", "messages": messages, "stream": stream, **extra}
    )


async def usage_of(client: Client, data: bytes, key: str = "sk-test") -> dict[str, Any]:
    resp = await client.post(
        "/chat/completions", data=data, headers={"Authorization": f"Bearer {key}"}
    )
    assert resp.status == 200
    raw = await resp.read()
    if raw.lstrip().startswith(b"{"):
        usage: dict[str, Any] = orjson.loads(raw)["usage"]
        return usage
    last: dict[str, Any] = data_objects(raw)[-1]["usage"]
    return last


def check_arithmetic(u: dict[str, Any]) -> None:
    assert u["prompt_cache_hit_tokens"] + u["prompt_cache_miss_tokens"] == u["prompt_tokens"]
    assert u["prompt_tokens_details"]["cached_tokens"] == u["prompt_cache_hit_tokens"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    reasoning = u.get("completion_tokens_details", {}).get("reasoning_tokens", 0)
    assert 0 <= reasoning <= u["completion_tokens"]


async def test_usage_adds_up_and_respects_max_tokens(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, fast_scenario())
    system = "You are a careful assistant. " * 40
    for i, stream in enumerate([False, True] * 4):
        u = await usage_of(client, body(f"question {i}", system, stream, max_tokens=5))
        check_arithmetic(u)
        assert u["completion_tokens"] <= 5


async def test_cache_hits_in_whole_units_per_key(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, fast_scenario(cache_unit=64))
    system = "S" * 2000  # "system\n" + 2000 chars + "\nuser\n" is shared by both requests
    first = await usage_of(client, body("alpha", system))
    assert first["prompt_cache_hit_tokens"] == 0
    second = await usage_of(client, body("beta", system))
    shared_chars = len("system\n" + system + "\nuser\n")
    assert second["prompt_cache_hit_tokens"] == (shared_chars // (64 * 4)) * 64
    assert second["prompt_cache_hit_tokens"] % 64 == 0
    check_arithmetic(second)
    other_key = await usage_of(client, body("beta", system), key="sk-other")
    assert other_key["prompt_cache_hit_tokens"] == 0


async def test_cache_disabled(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, fast_scenario(cache_enabled=False))
    await usage_of(client, body("a", "S" * 2000))
    assert (await usage_of(client, body("a", "S" * 2000)))["prompt_cache_hit_tokens"] == 0


async def test_429_above_balance_based_limit(aiohttp_client: Any) -> None:
    slow = fast_scenario(initial_balance_usd=2.5, concurrency_per_usd=1.0, decode_s_per_token=0.05)
    client = await make_client(aiohttp_client, slow)
    held = [
        await client.post("/chat/completions", data=body(stream=True), headers=AUTH)
        for _ in range(2)
    ]
    assert [r.status for r in held] == [200, 200]
    resp = await client.post("/chat/completions", data=body(), headers=AUTH)
    assert resp.status == 429
    expected = {
        "error": {
            "message": "Too many requests. Your current concurrency is 3, which exceeds your"
            " concurrency limit of 2 based on your remaining balance. Please top up your balance"
            " to restore your concurrency.",
            "type": "rate_limit_error",
            "param": None,
            "code": "invalid_request_error",
        }
    }
    assert await resp.read() == orjson.dumps(expected)
    assert "Retry-After" not in resp.headers
    for r in held:
        await r.read()
    resp = await client.post("/chat/completions", data=body(), headers=AUTH)
    assert resp.status == 200


async def test_keepalives_while_queued(aiohttp_client: Any) -> None:
    scenario = fast_scenario(soft_capacity=1, decode_s_per_token=0.02, keepalive_interval_s=0.02)
    client = await make_client(aiohttp_client, scenario)
    first = await client.post("/chat/completions", data=body(stream=True), headers=AUTH)
    queued_stream = client.post("/chat/completions", data=body(stream=True), headers=AUTH)
    queued_json = client.post("/chat/completions", data=body("x"), headers=AUTH)
    r_stream, r_json = await asyncio.gather(queued_stream, queued_json)
    raw_stream, raw_json, _ = await asyncio.gather(r_stream.read(), r_json.read(), first.read())
    assert raw_stream.startswith(b": keep-alive\n\n")
    assert raw_stream.endswith(b"data: [DONE]\n\n")
    assert raw_json.startswith(b"\n") and b"\n" not in raw_json.lstrip(b"\n")
    check_arithmetic(orjson.loads(raw_json)["usage"])


async def test_gzip_includes_blank_lines(aiohttp_client: Any) -> None:
    scenario = fast_scenario(soft_capacity=1, decode_s_per_token=0.02, keepalive_interval_s=0.02)
    client = await make_client(aiohttp_client, scenario)
    first = await client.post("/chat/completions", data=body(stream=True), headers=AUTH)
    resp = await client.post(
        "/chat/completions", data=body(), headers={**AUTH, "Accept-Encoding": "gzip"}
    )
    raw = await resp.read()  # aiohttp decompresses: the blank lines were inside the gzip stream
    await first.read()
    assert resp.headers["Content-Encoding"] == "gzip"
    assert raw.startswith(b"\n") and orjson.loads(raw)["object"] == "chat.completion"


async def test_balance_runs_out_then_402(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, fast_scenario(initial_balance_usd=1e-9))
    assert (await client.post("/chat/completions", data=body(), headers=AUTH)).status == 200
    resp = await client.post("/chat/completions", data=body(), headers=AUTH)
    assert resp.status == 402
    assert orjson.loads(await resp.read())["error"] == {
        "message": "Insufficient Balance",
        "type": "unknown_error",
        "param": None,
        "code": "invalid_request_error",
    }
    balance = orjson.loads(await (await client.get("/user/balance", headers=AUTH)).read())
    assert balance["is_available"] is False
    assert balance["balance_infos"][0]["total_balance"] == "0.00"


async def test_balance_falls_with_spend(aiohttp_client: Any) -> None:
    scenario = fast_scenario(initial_balance_usd=1.0, price_multiplier=10_000.0)
    client = await make_client(aiohttp_client, scenario)
    await client.post("/chat/completions", data=body("x" * 400), headers=AUTH)
    balance = orjson.loads(await (await client.get("/user/balance", headers=AUTH)).read())
    assert float(balance["balance_infos"][0]["total_balance"]) < 1.0


def strip_ids(raw: bytes) -> list[Any]:
    objs = data_objects(raw) if raw.startswith(b"data") else [orjson.loads(raw)]
    for obj in objs:
        obj.pop("id", None)
        obj.pop("created", None)
    return objs


async def run_sequence(aiohttp_client: Any, seed: int) -> list[Any]:
    client = await make_client(aiohttp_client, fast_scenario(error_503_rate=0.3), seed)
    out: list[Any] = []
    for i in range(6):
        resp = await client.post(
            "/chat/completions", data=body(f"q{i}", stream=i % 2 == 0), headers=AUTH
        )
        out.append((resp.status, strip_ids(await resp.read())))
    return out


async def test_same_seed_same_bodies(aiohttp_client: Any) -> None:
    a = await run_sequence(aiohttp_client, 42)
    b = await run_sequence(aiohttp_client, 42)
    c = await run_sequence(aiohttp_client, 43)
    assert a == b
    assert a != c


@pytest.mark.parametrize(("knob", "status"), [("error_500_rate", 500), ("error_503_rate", 503)])
async def test_injected_errors(aiohttp_client: Any, knob: str, status: int) -> None:
    client = await make_client(aiohttp_client, fast_scenario(**{knob: 1.0}))
    resp = await client.post("/chat/completions", data=body(), headers=AUTH)
    assert resp.status == status
    assert set(orjson.loads(await resp.read())["error"]) == {"message", "type", "param", "code"}


async def test_abort_breaks_stream_without_done(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, fast_scenario(abort_rate=1.0))
    resp = await client.post("/chat/completions", data=body(stream=True), headers=AUTH)
    assert resp.status == 200
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in resp.content.iter_any():
            received += chunk
    assert b"[DONE]" not in received


async def test_stall_pauses_stream(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, fast_scenario(stall_rate=1.0, stall_s=0.3))
    started = time.monotonic()
    resp = await client.post("/chat/completions", data=body(stream=True), headers=AUTH)
    raw = await resp.read()
    assert time.monotonic() - started >= 0.3
    assert raw.endswith(b"data: [DONE]\n\n")


async def test_unknown_model_and_bad_json(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, fast_scenario())
    resp = await client.post("/chat/completions", data=b"{nope", headers=AUTH)
    assert resp.status == 400
    legacy = orjson.dumps({"model": "deepseek-v4-flash", "messages": []})
    resp = await client.post("/v1/chat/completions", data=legacy, headers=AUTH)
    assert orjson.loads(await resp.read())["model"] == "deepseek-v4-flash"
