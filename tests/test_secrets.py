"""Nothing leaked: API keys, prompts and answers never reach logs or metrics."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from tests.conftest import RunningSidecar, SidecarFactory
from tests.fake_realtime import RESPONSE, FakeRealtime
from tests.fake_upstream import ABORT, FakeUpstream, Pause, Reply, fixture, json_reply

KEY = "sk-PLANTED-KEY-9f8e7d6c5b4a"
ANTHROPIC_KEY = "sk-ant-PLANTED-2b3c4d"
INJECTED_KEY = "sk-INJECTED-SECRET-1a2b3c"
PROMPT_MARKER = "PROMPT-MARKER-7c1d"
ANSWER_MARKER = "ANSWER-MARKER-3e9a"

REQUEST = orjson.dumps(
    {
        "model": "deepseek-flash",
        "stream": True,
        "messages": [{"role": "user", "content": f"say {PROMPT_MARKER}"}],
    }
)
STREAM = (
    b'data: {"model":"deepseek-flash","choices":[{"delta":{"content":"'
    + ANSWER_MARKER.encode()
    + b'"}}]}\n\n'
    b'data: {"model":"deepseek-flash","choices":[{"delta":{"content":""},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}\n\n'
    b"data: [DONE]\n\n"
)


def answer() -> Reply:
    return Reply(headers={"Content-Type": "text/event-stream"}, steps=[STREAM])


async def drive_every_path(sidecar: RunningSidecar, fake: FakeUpstream) -> None:
    fake.push(
        answer(),
        json_reply(fixture("deepseek-error-429.json"), status=429),
        json_reply(fixture("deepseek-error-429.json"), status=429),  # the retry's answer
        Reply(
            headers={"Content-Type": "text/event-stream"}, steps=[STREAM[:60], Pause(0.05), ABORT]
        ),
        Reply(
            headers={"Content-Type": "text/event-stream"},
            steps=[STREAM[:80]] + [Pause(0.05), b": keep-alive\n\n"] * 100,
        ),
        answer(),
    )
    headers = {"Authorization": f"Bearer {KEY}", "x-api-key": ANTHROPIC_KEY}
    async with aiohttp.ClientSession() as client:
        for _ in range(3):  # success, 429, upstream abort
            try:
                async with client.post(
                    sidecar.url + "/chat/completions", data=REQUEST, headers=headers
                ) as response:
                    await response.read()
            except aiohttp.ClientPayloadError:
                pass
        response = await client.post(
            sidecar.url + "/chat/completions", data=REQUEST, headers=headers
        )
        await response.content.readexactly(80)
        response.close()  # client disconnect mid-stream
        await asyncio.wait_for(fake.disconnected.wait(), 5)
        async with client.post(sidecar.url + "/anthropic/v1/messages", data=REQUEST) as response:
            await response.read()  # no client credentials: the injected key is used
    for _ in range(100):
        if sidecar.log.getvalue().count(b"exchange") >= 5:
            break
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_keys_prompts_and_answers_never_appear(
    log_format: str, fake_upstream: tuple[FakeUpstream, str], start_sidecar: SidecarFactory
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(
        url,
        api_key=INJECTED_KEY,
        log_format=log_format,
        retry_max_attempts=2,
        retry_max_wait_s=0.2,
    )
    if log_format == "console":
        from sidecar.telemetry.logs import build_logger

        sidecar.sidecar.logger = build_logger("debug", "console", sidecar.log)
        sidecar.sidecar.proxy._attempt.log = sidecar.sidecar.logger
    await drive_every_path(sidecar, fake)
    logs = sidecar.log.getvalue().decode()
    metrics = await sidecar.scrape() + await sidecar.scrape("application/openmetrics-text")
    assert logs.count("exchange") >= 5, logs
    assert "upstream_retry" in logs  # debug lines were written, and checked too
    for secret in (KEY, ANTHROPIC_KEY, INJECTED_KEY, PROMPT_MARKER, ANSWER_MARKER, "Bearer"):
        assert secret not in logs, secret
        assert secret not in metrics, secret
    # the upstream did get them: the sidecar forwards, it just never records them
    assert fake.received[0].headers["Authorization"] == f"Bearer {KEY}"
    assert fake.received[-1].headers["Authorization"] == f"Bearer {INJECTED_KEY}"
    if log_format == "json":
        outcomes = [line["outcome"] for line in sidecar.exchanges()]
        assert sorted(outcomes) == sorted(
            ["completed", "completed", "upstream_aborted", "client_disconnected", "completed"]
        )


async def test_realtime_sessions_leak_no_key_and_no_frame_content(
    realtime_upstream: tuple[FakeRealtime, str], start_sidecar: SidecarFactory
) -> None:
    fake, url = realtime_upstream
    sidecar = await start_sidecar(url)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(sidecar.url + "/v1/realtime?model=gpt-realtime", headers=headers) as ws,
    ):
        await ws.receive_str()
        await ws.send_str(orjson.dumps({"type": "x", "text": PROMPT_MARKER}).decode())
        assert ANSWER_MARKER not in await ws.receive_str()
        await ws.send_str(orjson.dumps({"type": "response.create", "m": ANSWER_MARKER}).decode())
        for _ in RESPONSE:
            await ws.receive_str()
    for _ in range(100):
        if sidecar.exchanges():
            break
        await asyncio.sleep(0.02)
    logs = sidecar.log.getvalue().decode()
    metrics = await sidecar.scrape() + await sidecar.scrape("application/openmetrics-text")
    assert '"route":"realtime"' in logs
    for secret in (KEY, PROMPT_MARKER, ANSWER_MARKER, "Bearer", "response.create"):
        assert secret not in logs, secret
        assert secret not in metrics, secret
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"  # forwarded, never recorded
