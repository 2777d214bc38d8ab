"""The official openai SDK talking to the sidecar, as an application would."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.conftest import RunningSidecar, SidecarFactory, closed_port
from tests.fake_upstream import FakeUpstream, fixture, json_reply, sse

Upstream = tuple[FakeUpstream, str]
MESSAGES = [{"role": "user", "content": "hi"}]


async def test_async_stream_and_usage(fake_upstream: Upstream, sidecar: RunningSidecar) -> None:
    fake, _ = fake_upstream
    fake.push(sse("deepseek-chat-stream.sse"))
    client = openai.AsyncOpenAI(base_url=sidecar.url, api_key="sk-test", max_retries=0)
    stream = await client.chat.completions.create(
        model="deepseek-chat",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    await client.close()
    assert text.startswith("Sure! Here is a short haiku")
    assert usage is not None and usage.prompt_tokens == 1220
    assert (
        sidecar.value(
            "llm_time_to_first_token_seconds_count",
            upstream="deepseek",
            route="chat_completions",
            model="deepseek-chat",
        )
        == 1
    )


async def test_async_non_stream_with_blank_lines(
    fake_upstream: Upstream, sidecar: RunningSidecar
) -> None:
    fake, _ = fake_upstream
    fake.push(json_reply(fixture("deepseek-reasoner-nonstream.json")))
    client = openai.AsyncOpenAI(base_url=sidecar.url + "/v1", api_key="sk-test", max_retries=0)
    completion = await client.chat.completions.create(model="deepseek-reasoner", messages=MESSAGES)  # type: ignore[arg-type]
    await client.close()
    assert completion.choices[0].message.content == "9.8 is larger."
    assert fake.received[0].path_qs == "/v1/chat/completions"
    assert (
        sidecar.value(
            "llm_tokens_total", upstream="deepseek", model="deepseek-reasoner", type="reasoning"
        )
        > 0
    )


async def test_sync_client_stream_and_non_stream(
    fake_upstream: Upstream, sidecar: RunningSidecar
) -> None:
    fake, _ = fake_upstream
    fake.push(
        json_reply(fixture("deepseek-chat-nonstream.json")), sse("deepseek-reasoner-stream.sse")
    )

    def use_sync_sdk() -> tuple[str, str]:
        with openai.OpenAI(base_url=sidecar.url, api_key="sk-test", max_retries=0) as client:
            plain = client.chat.completions.create(model="deepseek-chat", messages=MESSAGES)  # type: ignore[arg-type]
            streamed = ""
            for chunk in client.chat.completions.create(
                model="deepseek-reasoner",
                messages=MESSAGES,
                stream=True,  # type: ignore[arg-type]
            ):
                streamed += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            return plain.choices[0].message.content or "", streamed

    plain, streamed = await asyncio.to_thread(use_sync_sdk)
    assert plain == "Hello! How can I help you today?"
    assert streamed == "9.8 is larger than 9.11."


async def test_rate_limit_error_reaches_the_sdk_unchanged(
    fake_upstream: Upstream, sidecar: RunningSidecar
) -> None:
    fake, _ = fake_upstream
    fake.push(json_reply(fixture("deepseek-error-429.json"), status=429))
    client = openai.AsyncOpenAI(base_url=sidecar.url, api_key="sk-test", max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)  # type: ignore[arg-type]
    await client.close()
    assert "exceeds your concurrency limit of 40" in str(info.value)
    assert info.value.response.headers.get("x-sidecar-error") is None
    assert (
        sidecar.value("llm_upstream_concurrency_limit", upstream="deepseek", source="reported")
        == 40
    )


async def test_sidecar_errors_surface_as_sdk_errors(start_sidecar: SidecarFactory) -> None:
    port = closed_port()
    sidecar = await start_sidecar(f"http://127.0.0.1:{port}")
    client = openai.AsyncOpenAI(base_url=sidecar.url, api_key="sk-test", max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)  # type: ignore[arg-type]
    await client.close()
    assert info.value.status_code == 502
    assert info.value.type == "upstream_unreachable"  # type: ignore[attr-defined]
    assert info.value.response.headers["x-sidecar-error"] == "upstream_unreachable"
