"""The relay over real sockets: bytes unchanged, nothing buffered, failures never hidden."""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import orjson
import pytest

from tests.conftest import RunningSidecar, SidecarFactory, closed_port
from tests.fake_upstream import ABORT, FakeUpstream, Gate, Pause, Reply, fixture, json_reply, sse

Upstream = tuple[FakeUpstream, str]
CHAT = b'{"model":"deepseek-chat","stream":true,"messages":[]}'

SSE_FIXTURES = [
    "deepseek-chat-stream.sse",
    "deepseek-chat-stream-no-include-usage.sse",
    "deepseek-reasoner-stream.sse",
    "deepseek-v4-flash-thinking-stream.sse",
    "deepseek-chat-toolcall-stream.sse",
    "openai-stream-include-usage.sse",
    "anthropic-messages-stream.sse",
    "anthropic-error-overloaded.sse",
]


@pytest.mark.parametrize("name", SSE_FIXTURES)
async def test_streams_reach_the_client_byte_for_byte(
    name: str, fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    fake.push(sse(name))
    async with client.post(sidecar.url + "/v1/chat/completions", data=CHAT) as response:
        assert await response.read() == fixture(name)
        assert response.headers["Content-Type"] == "text/event-stream"


async def test_gzip_json_is_relayed_compressed_and_observed(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    compressed = gzip.compress(fixture("deepseek-chat-nonstream.json"))
    fake.push(json_reply(compressed, **{"Content-Encoding": "gzip", "x-ds-trace-id": "ab" * 16}))
    async with client.post(sidecar.url + "/chat/completions", data=b'{"model":"m"}') as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Length"] == str(len(compressed))
        assert await response.read() == compressed
    labels = {"upstream": "deepseek", "model": "deepseek-chat"}
    assert sidecar.value("llm_tokens_total", type="input", **labels) == 1234
    assert sidecar.value("llm_tokens_total", type="cache_hit", **labels) == 1152
    assert sidecar.value("llm_tokens_total", type="cache_miss", **labels) == 82
    assert sidecar.value("llm_tokens_total", type="output", **labels) == 9
    (line,) = sidecar.exchanges()
    assert line["upstream_trace_id"] == "ab" * 16
    assert line["queue_s"] is not None  # three blank lines came before the JSON


async def test_first_chunk_reaches_client_before_upstream_finishes(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    gate = asyncio.Event()
    first = b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
    fake.push(
        Reply(
            headers={"Content-Type": "text/event-stream"},
            steps=[first, Gate(gate), b"data: [DONE]\n\n"],
        )
    )
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        assert await response.content.readexactly(len(first)) == first
        assert not fake.finished.is_set()
        gate.set()
        assert await response.read() == b"data: [DONE]\n\n"


async def test_path_prefix_query_and_headers_forwarded(
    fake_upstream: Upstream, start_sidecar: SidecarFactory
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(url + "/prefix")
    bare = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
    async with aiohttp.ClientSession(skip_auto_headers=bare) as client:
        await _send_with_hop_headers(client, sidecar, fake, url)


async def _send_with_hop_headers(
    client: aiohttp.ClientSession, sidecar: RunningSidecar, fake: FakeUpstream, url: str
) -> None:
    headers = {
        "Authorization": "Bearer sk-client",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "drop me",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Upgrade": "h2c",
        "Proxy-Authorization": "Basic eA==",
        "X-Custom": "kept",
        "X-Forwarded-For": "10.1.1.1",
    }
    async with client.post(
        sidecar.url + "/v1/chat/completions?a=1&b=%20x", data=b"{}", headers=headers
    ) as response:
        await response.read()
        request_id = response.headers["x-request-id"]
    (got,) = fake.received
    assert got.path_qs == "/prefix/v1/chat/completions?a=1&b=%20x"
    for hop in ("Connection", "X-Hop", "Keep-Alive", "TE", "Upgrade", "Proxy-Authorization"):
        assert hop not in got.headers or (
            hop == "Connection" and got.headers[hop] != "keep-alive, X-Hop"
        )
    assert got.headers["Host"] == url.removeprefix("http://")
    assert got.headers["Authorization"] == "Bearer sk-client"
    assert got.headers["X-Custom"] == "kept"
    assert got.headers["X-Forwarded-For"] == "10.1.1.1, 127.0.0.1"
    assert got.headers["X-Forwarded-Proto"] == "http"
    assert got.headers["x-request-id"] == request_id and len(request_id) == 32
    for added in ("Accept-Encoding", "User-Agent", "Accept"):
        assert added not in got.headers, added
    assert got.body == b"{}"


async def test_incoming_request_id_is_kept_and_returned(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    async with client.get(sidecar.url + "/models", headers={"x-request-id": "req-42"}) as response:
        assert response.headers["x-request-id"] == "req-42"
    assert fake.received[0].headers["x-request-id"] == "req-42"
    assert sidecar.exchanges()[0]["request_id"] == "req-42"


async def test_request_body_limit_is_inclusive(
    fake_upstream: Upstream, start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(url, max_request_bytes=1000)
    async with client.post(sidecar.url + "/chat/completions", data=b"x" * 1000) as response:
        assert response.status == 200
    async with client.post(sidecar.url + "/chat/completions", data=b"x" * 1001) as response:
        assert response.status == 413
        assert response.headers["x-sidecar-error"] == "request_too_large"
        error = orjson.loads(await response.read())["error"]
        assert error["type"] == "request_too_large" and error["param"] is None
    assert len(fake.received) == 1
    assert (
        sidecar.requests(
            route="chat_completions", model="none", stream="false", code="413", outcome="rejected"
        )
        == 1
    )


async def test_chunked_upload_over_the_limit_is_refused(
    fake_upstream: Upstream, start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(url, max_request_bytes=10)

    async def body():  # type: ignore[no-untyped-def]
        yield b"x" * 8
        yield b"x" * 8

    async with client.post(sidecar.url + "/chat/completions", data=body()) as response:
        assert response.status == 413
    assert fake.received == []


async def test_unreachable_upstream_is_a_502_envelope(
    start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    port = closed_port()
    sidecar = await start_sidecar(f"http://127.0.0.1:{port}")
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        assert response.status == 502
        assert response.headers["x-sidecar-error"] == "upstream_unreachable"
        body = orjson.loads(await response.read())
    assert body["error"]["type"] == "upstream_unreachable"
    assert sidecar.exchanges()[0]["outcome"] == "upstream_unreachable"
    assert sidecar.attempts("error") == 1


async def test_silence_before_headers_is_a_504(
    fake_upstream: Upstream, start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(url, idle_timeout_s=0.3)
    fake.push(Reply(before_headers=Gate(asyncio.Event())))
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        assert response.status == 504
        assert response.headers["x-sidecar-error"] == "upstream_timeout"
    assert sidecar.exchanges()[0]["outcome"] == "upstream_timeout"


async def test_keepalives_reset_the_idle_timer_but_silence_breaks_the_stream(
    fake_upstream: Upstream, start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(url, idle_timeout_s=0.6)
    keepalives: list[bytes | Pause] = []
    for _ in range(5):  # 5 x 0.2 s of keep-alives: longer than the idle timeout in total
        keepalives += [b": keep-alive\n\n", Pause(0.2)]
    steps = [*keepalives, b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', Pause(5)]
    fake.push(Reply(headers={"Content-Type": "text/event-stream"}, steps=steps))
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    (line,) = sidecar.exchanges()
    assert line["outcome"] == "upstream_timeout"
    assert line["queue_s"] >= 0.9  # five 0.2 s keep-alive gaps, each shorter than the timeout
    assert (
        sidecar.value(
            "llm_usage_missing_total",
            upstream="deepseek",
            route="chat_completions",
            model="deepseek-chat",
        )
        == 1
    )


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
async def test_upstream_abort_breaks_the_client_response(
    chunked: bool, fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    head = b'data: {"choices":[{"delta":{"content":"partial"}}]}\n\n'
    reply = Reply(headers={"Content-Type": "text/event-stream"}, steps=[head, Pause(0.05), ABORT])
    if not chunked:
        reply.chunked = False
        reply.headers["Content-Length"] = "10000"
    fake.push(reply)
    received = b""
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in response.content.iter_any():
                received += chunk
    assert received == head  # everything relayed so far arrived, then the break
    (line,) = sidecar.exchanges()
    assert line["outcome"] == "upstream_aborted"
    assert (
        sidecar.requests(
            route="chat_completions",
            model="deepseek-chat",
            stream="true",
            code="200",
            outcome="upstream_aborted",
        )
        == 1
    )


async def test_client_disconnect_releases_the_upstream(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    first = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    steps: list[bytes | Pause] = [first]
    steps += [Pause(0.05), b": keep-alive\n\n"] * 200
    fake.push(Reply(headers={"Content-Type": "text/event-stream"}, steps=steps))
    response = await client.post(sidecar.url + "/chat/completions", data=CHAT)
    assert await response.content.readexactly(len(first)) == first
    response.close()  # the client goes away mid-stream
    await asyncio.wait_for(fake.disconnected.wait(), 5)
    for _ in range(100):
        if sidecar.exchanges():
            break
        await asyncio.sleep(0.02)
    (line,) = sidecar.exchanges()
    assert line["outcome"] == "client_disconnected"
    assert (
        sidecar.value(
            "llm_usage_missing_total",
            upstream="deepseek",
            route="chat_completions",
            model="deepseek-chat",
        )
        == 1
    )
    assert (
        sidecar.value("llm_in_flight_requests", upstream="deepseek", route="chat_completions") == 0
    )


async def test_client_disconnect_while_queued_without_bytes(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    fake.push(Reply(before_headers=Gate(asyncio.Event())))
    task = asyncio.ensure_future(client.post(sidecar.url + "/chat/completions", data=CHAT))
    for _ in range(100):
        if fake.received:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.wait_for(fake.disconnected.wait(), 5)
    for _ in range(100):
        if sidecar.exchanges():
            break
        await asyncio.sleep(0.02)
    assert sidecar.exchanges()[0]["outcome"] == "client_disconnected"


async def raw_request(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    data = await reader.read(65536)
    writer.close()
    return data


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET http://example.com/v1/models HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    ],
    ids=["absolute-form", "connect"],
)
async def test_not_an_open_proxy(
    request_line: bytes, fake_upstream: Upstream, sidecar: RunningSidecar
) -> None:
    fake, _ = fake_upstream
    answer = await raw_request(sidecar.url, request_line)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"x-sidecar-error: bad_request" in answer.lower()
    assert b'"type":"bad_request"' in answer
    assert fake.received == []


async def test_relayed_upstream_errors_are_not_sidecar_errors(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    body = fixture("deepseek-error-429.json")
    fake.push(json_reply(body, status=429))
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        assert response.status == 429
        assert "x-sidecar-error" not in response.headers
        assert await response.read() == body
    assert (
        sidecar.value("llm_upstream_concurrency_limit", upstream="deepseek", source="reported")
        == 40
    )
    assert (
        sidecar.value(
            "llm_usage_missing_total",
            upstream="deepseek",
            route="chat_completions",
            model="deepseek-chat",
        )
        == 0
    )


async def test_ratelimit_headers_and_retry_after(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6m0s",
        "retry-after-ms": "531",
        "retry-after": "1",
    }
    fake.push(json_reply(fixture("openai-error-429.json"), status=429, **headers))
    async with client.post(sidecar.url + "/v1/chat/completions", data=CHAT) as response:
        await response.read()
    v = sidecar.value
    assert v("llm_ratelimit_limit", upstream="deepseek", resource="requests") == 60
    assert v("llm_ratelimit_remaining", upstream="deepseek", resource="tokens") == 149984
    assert v("llm_ratelimit_reset_seconds", upstream="deepseek", resource="tokens") == 360
    assert v("llm_ratelimit_reset_seconds", upstream="deepseek", resource="requests") == 1
    assert v("llm_retry_after_seconds_sum", upstream="deepseek") == pytest.approx(0.531)
    assert sidecar.exchanges()[0]["retry_after_s"] == pytest.approx(0.531)


async def test_exact_stream_metrics(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    reply = sse("deepseek-reasoner-stream.sse")
    reply.steps = [step for event in reply.steps for step in (event, Pause(0.01))]
    fake.push(reply)
    async with client.post(sidecar.url + "/beta/chat/completions", data=CHAT) as response:
        await response.read()
    v = sidecar.value
    labels = {"upstream": "deepseek", "route": "chat_completions", "model": "deepseek-reasoner"}
    assert v("llm_requests_total", stream="true", code="200", outcome="completed", **labels) == 1
    assert v("llm_time_to_first_token_seconds_count", **labels) == 1
    assert v("llm_upstream_queue_seconds_count", **labels) == 1
    assert v("llm_time_per_output_token_seconds_count", **labels) == 1
    assert v("llm_request_duration_seconds_count", stream="true", **labels) == 1
    assert (
        v("llm_tokens_total", upstream="deepseek", model="deepseek-reasoner", type="reasoning") > 0
    )
    assert (
        v("llm_request_tokens_count", upstream="deepseek", model="deepseek-reasoner", type="output")
        == 1
    )
    assert v("llm_in_flight_requests", upstream="deepseek", route="chat_completions") == 0
    (line,) = sidecar.exchanges()
    assert 0 < line["queue_s"] < line["ttft_s"] < line["duration_s"]
    assert line["attempts"] == 1 and line["outcome"] == "completed"


async def test_in_flight_gauge_during_a_stream(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    gate = asyncio.Event()
    fake.push(Reply(headers={"Content-Type": "text/event-stream"}, steps=[b": x\n\n", Gate(gate)]))
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        await response.content.readexactly(5)
        assert (
            sidecar.value("llm_in_flight_requests", upstream="deepseek", route="chat_completions")
            == 1
        )
        gate.set()
        await response.read()
    assert (
        sidecar.value("llm_in_flight_requests", upstream="deepseek", route="chat_completions") == 0
    )


async def test_model_labels_are_capped(
    fake_upstream: Upstream, start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    _, url = fake_upstream
    sidecar = await start_sidecar(url, models=("known",), max_models=2)
    for model in ("known", "a", "b", "c", "d"):
        body = orjson.dumps({"model": model})
        async with client.post(sidecar.url + "/chat/completions", data=body) as response:
            await response.read()
    families = {
        s.labels["model"]
        for metric in sidecar.registry.collect()
        if metric.name == "llm_requests"
        for s in metric.samples
    }
    assert families == {"known", "a", "b", "other"}


async def test_malformed_client_requests_get_the_envelope(sidecar: RunningSidecar) -> None:
    answer = await raw_request(
        sidecar.url, b"GET /models?key=sk-secret HTTP/1.1\r\nBad Header\r\n\r\n"
    )
    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    assert b'"type":"bad_request"' in answer
    assert b"sk-secret" not in answer


async def test_garbage_from_the_upstream_is_a_502_envelope(
    start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sidecar = await start_sidecar(f"http://127.0.0.1:{port}")
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        assert response.status == 502
        assert response.headers["x-sidecar-error"] == "upstream_bad_response"
    server.close()
    assert sidecar.exchanges()[0]["error_type"] == "upstream_bad_response"


async def test_expect_continue_is_answered_here_not_forwarded(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    async with client.post(
        sidecar.url + "/chat/completions", data=b"{}", expect100=True
    ) as response:
        assert response.status == 200
    assert "Expect" not in fake.received[0].headers
    assert fake.received[0].body == b"{}"


async def test_upstream_connections_are_pooled(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    fake.push(sse("deepseek-chat-stream.sse"), json_reply(fixture("deepseek-chat-nonstream.json")))
    for _ in range(4):
        async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
            await response.read()
    peers = {r.headers["X-Peer-Port"] for r in fake.received}
    assert len(peers) == 1, peers


async def test_a_reader_bug_stops_observation_not_the_relay(
    fake_upstream: Upstream,
    sidecar: RunningSidecar,
    client: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sidecar.observe.readers import StreamReader

    def broken(self: StreamReader, event: object, now: float) -> None:
        raise RuntimeError("observer bug")

    monkeypatch.setattr(StreamReader, "_event", broken)
    fake, _ = fake_upstream
    fake.push(sse("deepseek-chat-stream.sse"))
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        assert await response.read() == fixture("deepseek-chat-stream.sse")
    (line,) = sidecar.exchanges()
    assert line["outcome"] == "completed"
    assert line["parse_error"] == "sse" and line["observer_error"] == "RuntimeError"
    assert sidecar.value("llm_sidecar_parse_errors_total", upstream="deepseek", kind="sse") == 1


async def test_an_unusable_request_id_is_replaced_consistently(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    async with client.get(sidecar.url + "/models", headers={"x-request-id": "x" * 300}) as r:
        returned = r.headers["x-request-id"]
    assert len(returned) == 32
    assert fake.received[0].headers.getall("x-request-id") == [returned]
    assert sidecar.exchanges()[0]["request_id"] == returned
