"""The ``openai`` flavour: headers and stream ending; the official SDK against the simulator."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from sidecar.simulator import build_app
from sidecar.simulator.ratelimit import go_duration
from sidecar.simulator.testing import data_objects, fast_scenario, key_paths

FIXTURES = Path(__file__).parent / "fixtures"
AUTH = {"Authorization": "Bearer sk-test"}


def request(stream: bool, **extra: Any) -> bytes:
    messages = [{"role": "user", "content": "hello"}]
    return orjson.dumps(
        {"model": "deepseek-flash", "messages": messages, "stream": stream, **extra}
    )


async def test_openai_flavour_headers_and_429(aiohttp_client: Any) -> None:
    client = await aiohttp_client(build_app(fast_scenario(flavour="openai", rpm_limit=2), 1))
    for remaining in ("1", "0"):
        resp = await client.post("/chat/completions", data=request(False), headers=AUTH)
        assert resp.status == 200
        assert resp.headers["x-ratelimit-limit-requests"] == "2"
        assert resp.headers["x-ratelimit-remaining-requests"] == remaining
        assert re.fullmatch(r"(\d+m)?[\d.]+m?s", resp.headers["x-ratelimit-reset-requests"])
        assert "x-ds-trace-id" not in resp.headers
        await resp.read()
    resp = await client.post("/chat/completions", data=request(False), headers=AUTH)
    assert resp.status == 429
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert orjson.loads(await resp.read())["error"]["param"] is None


async def test_openai_stream_has_trailing_usage_chunk(aiohttp_client: Any) -> None:
    client = await aiohttp_client(build_app(fast_scenario(flavour="openai"), 1))
    body = request(True, stream_options={"include_usage": True})
    raw = await (await client.post("/chat/completions", data=body, headers=AUTH)).read()
    ours = data_objects(raw)
    theirs = data_objects((FIXTURES / "openai-stream-include-usage.sse").read_bytes())
    for i in (0, 1, -2, -1):
        assert list(key_paths(ours[i])) == list(key_paths(theirs[i]))
    assert ours[-1]["choices"] == [] and raw.endswith(b"data: [DONE]\n\n")


async def test_openai_nonstream_matches_capture(aiohttp_client: Any) -> None:
    client = await aiohttp_client(build_app(fast_scenario(flavour="openai"), 1))
    ours = orjson.loads(
        await (await client.post("/chat/completions", data=request(False), headers=AUTH)).read()
    )
    theirs = orjson.loads((FIXTURES / "openai-chat-nonstream.json").read_bytes())
    assert list(key_paths(ours)) == list(key_paths(theirs))


def test_go_durations() -> None:
    assert go_duration(0.012) == "12ms"
    assert go_duration(1.0) == "1s"
    assert go_duration(360.0) == "6m0s"
    assert go_duration(17.3) == "17.3s"
    assert go_duration(3723.0) == "1h2m3s"


async def test_official_sdk_stream_and_nonstream(aiohttp_server: Any) -> None:
    server: TestServer = await aiohttp_server(build_app(fast_scenario(), 3))
    sdk = AsyncOpenAI(base_url=str(server.make_url("/")), api_key="sk-sdk", max_retries=0)
    try:
        done = await sdk.chat.completions.create(
            model="deepseek-reasoner", messages=[{"role": "user", "content": "hi"}]
        )
        assert done.usage is not None and done.usage.total_tokens > 0
        assert done.choices[0].finish_reason == "stop"
        stream = await sdk.chat.completions.create(
            model="deepseek-chat",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            usage = chunk.usage or usage
        assert text and usage is not None and usage.completion_tokens > 0
    finally:
        await sdk.close()


async def test_web_app_typed(aiohttp_client: Any) -> None:
    app: web.Application = build_app(fast_scenario(), 0)
    client = await aiohttp_client(app)
    assert (await client.get("/models")).status == 401
