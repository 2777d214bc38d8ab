"""Wire conformance: every simulator response has the captured key order, nullability, framing."""

from __future__ import annotations

import gzip
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sidecar.simulator import build_app
from sidecar.simulator.testing import data_objects, fast_scenario, key_paths, split_events

FIXTURES = Path(__file__).parent / "fixtures"
AUTH = {"Authorization": "Bearer sk-test"}
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


def fixture_objects(name: str) -> list[dict[str, Any]]:
    return data_objects((FIXTURES / name).read_bytes())


def fixture_json(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes().lstrip(b"\n"))


def paths(obj: Any) -> list[str]:
    return list(key_paths(obj))


@pytest.fixture
async def client(aiohttp_client: Any) -> Client:
    c: Client = await aiohttp_client(build_app(fast_scenario(), seed=7))
    return c


def chat(model: str, stream: bool, include_usage: bool | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    body["stream"] = stream
    if include_usage is not None:
        body["stream_options"] = {"include_usage": include_usage}
    body.update(extra)
    return orjson.dumps(body)


async def post_stream(client: Client, body: bytes, path: str = "/chat/completions") -> bytes:
    resp = await client.post(path, data=body, headers=AUTH)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["x-ds-trace-id"])
    assert not any(h.lower().startswith("x-ratelimit") for h in resp.headers)
    assert "Retry-After" not in resp.headers
    return await resp.read()


def assert_stream_like(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    """First, middle and last chunk have the fixture's shape; id/created/fingerprint constant."""
    assert paths(ours[0]) == paths(theirs[0])
    assert paths(ours[1]) == paths(theirs[1])
    assert paths(ours[-1]) == paths(theirs[-1])
    assert len({(o["id"], o["created"], o["system_fingerprint"]) for o in ours}) == 1
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", ours[0]["id"]
    )
    assert re.fullmatch(r"[0-9a-f]{32}", ours[0]["system_fingerprint"])


@pytest.mark.parametrize(
    ("model", "include_usage", "fixture"),
    [
        ("deepseek-chat", True, "deepseek-chat-stream.sse"),
        ("deepseek-chat", None, "deepseek-chat-stream-no-include-usage.sse"),
        ("deepseek-reasoner", None, "deepseek-reasoner-stream.sse"),
        ("deepseek-v4-flash", True, "deepseek-v4-flash-thinking-stream.sse"),
    ],
)
async def test_chat_stream_matches_capture(
    client: Client, model: str, include_usage: bool | None, fixture: str
) -> None:
    raw = await post_stream(client, chat(model, True, include_usage))
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    assert b"\r" not in raw
    ours = data_objects(raw)
    theirs = fixture_objects(fixture)
    assert_stream_like(ours, theirs)
    assert all(o["model"] == model for o in ours)
    if include_usage:
        assert all(o["usage"] is None for o in ours[:-1])
    else:
        assert all("usage" not in o for o in ours[:-1])


async def test_thinking_stream_orders_reasoning_before_content(client: Client) -> None:
    raw = await post_stream(client, chat("deepseek-flash", True, True))
    deltas = [o["choices"][0]["delta"] for o in data_objects(raw)[1:-1]]
    kinds = ["r" if d["reasoning_content"] is not None else "c" for d in deltas]
    assert kinds == sorted(kinds, reverse=True) and kinds[0] == "r" and kinds[-1] == "c"
    theirs = fixture_objects("deepseek-reasoner-stream.sse")
    assert paths(deltas[-1]) == paths(theirs[-2]["choices"][0]["delta"])


async def test_thinking_disabled_on_v4(client: Client) -> None:
    body = chat("deepseek-v4-pro", True, None, thinking={"type": "disabled"})
    ours = data_objects(await post_stream(client, body))
    assert_stream_like(ours, fixture_objects("deepseek-chat-stream-no-include-usage.sse"))


@pytest.mark.parametrize(
    ("model", "fixture"),
    [
        ("deepseek-chat", "deepseek-chat-nonstream.json"),
        ("deepseek-reasoner", "deepseek-reasoner-nonstream.json"),
    ],
)
async def test_nonstream_matches_capture(client: Client, model: str, fixture: str) -> None:
    resp = await client.post("/chat/completions", data=chat(model, False), headers=AUTH)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    raw = await resp.read()
    assert paths(orjson.loads(raw)) == paths(fixture_json(fixture))
    assert not raw.endswith(b"\n")
    assert b": " not in raw.replace(b'": "', b"")  # compact JSON


async def test_nonstream_gzip_raw_bytes(client: Client) -> None:
    resp = await client.post(
        "/chat/completions",
        data=chat("deepseek-chat", False),
        headers={**AUTH, "Accept-Encoding": "gzip"},
        auto_decompress=False,
    )
    assert resp.headers["Content-Encoding"] == "gzip"
    body = gzip.decompress(await resp.read())
    assert paths(orjson.loads(body)) == paths(fixture_json("deepseek-chat-nonstream.json"))


@pytest.mark.parametrize(
    ("status", "fixture", "setup"),
    [(400, "deepseek-error-400.json", "model"), (401, "deepseek-error-401.json", "auth")],
)
async def test_error_envelopes(client: Client, status: int, fixture: str, setup: str) -> None:
    headers = {} if setup == "auth" else AUTH
    model = "no-such-model" if setup == "model" else "deepseek-chat"
    resp = await client.post("/chat/completions", data=chat(model, False), headers=headers)
    assert resp.status == status
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["x-ds-trace-id"])
    ours = orjson.loads(await resp.read())
    assert paths(ours) == paths(fixture_json(fixture))
    if status == 400:
        assert ours == fixture_json(fixture)


async def test_models_and_balance_shapes(client: Client) -> None:
    resp = await client.get("/v1/models", headers=AUTH)
    models = orjson.loads(await resp.read())
    assert models["object"] == "list"
    assert list(models["data"][0]) == ["id", "object", "owned_by"]
    resp = await client.get("/user/balance", headers=AUTH)
    balance = orjson.loads(await resp.read())
    assert list(balance) == ["is_available", "balance_infos"]
    info = balance["balance_infos"][0]
    assert list(info) == ["currency", "total_balance", "granted_balance", "topped_up_balance"]
    assert all(isinstance(v, str) for v in info.values())


async def test_fim_stream_and_body(client: Client) -> None:
    body = orjson.dumps(
        {"model": "deepseek-chat", "prompt": "def f(", "suffix": "):", "stream": True}
    )
    ours = data_objects(await post_stream(client, body, "/beta/completions"))
    assert all(o["object"] == "text_completion" for o in ours)
    assert "usage" in ours[-1] and ours[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    body = orjson.dumps({"model": "deepseek-chat", "prompt": "def f(", "suffix": "):"})
    resp = await client.post("/beta/completions", data=body, headers=AUTH)
    obj = orjson.loads(await resp.read())
    assert list(obj) == [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
        "system_fingerprint",
    ]
    assert isinstance(obj["choices"][0]["text"], str)


async def test_anthropic_stream_grammar(client: Client) -> None:
    body = orjson.dumps(
        {"model": "deepseek-flash", "max_tokens": 100, "stream": True,
         "messages": [{"role": "user", "content": "hi"}]}
    )  # fmt: skip
    resp = await client.post("/anthropic/v1/messages", data=body, headers={"x-api-key": "sk-a"})
    raw = await resp.read()
    events = split_events(raw)
    names = [e.split(b"\n")[0].removeprefix(b"event: ").decode() for e in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    theirs = {
        e.split(b"\n")[0]: orjson.loads(e.split(b"\n")[1][6:])
        for e in split_events((FIXTURES / "anthropic-messages-stream.sse").read_bytes())
    }
    for event in events:
        name, data = event.split(b"\n")
        ours = orjson.loads(data[6:])
        assert ours["type"] == name.removeprefix(b"event: ").decode()
        assert paths(ours) == paths(theirs[name])


async def test_anthropic_thinking_and_nonstream(client: Client) -> None:
    base = {
        "model": "claude-opus-4",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "x"}],
    }
    body = orjson.dumps({**base, "stream": True, "thinking": {"type": "enabled"}})
    raw = await (await client.post("/anthropic/messages", data=body, headers=AUTH)).read()
    starts = [orjson.loads(e.split(b"\n")[1][6:]) for e in split_events(raw)]
    blocks = [s["content_block"]["type"] for s in starts if s["type"] == "content_block_start"]
    assert blocks == ["thinking", "text"]
    resp = await client.post("/anthropic/v1/messages", data=orjson.dumps(base), headers=AUTH)
    msg = orjson.loads(await resp.read())
    assert msg["type"] == "message" and msg["content"][-1]["type"] == "text"
    assert msg["stop_reason"] == "end_turn" and msg["model"] == "claude-opus-4"
    assert "cache_read_input_tokens" in msg["usage"]
