"""Hostile (or merely buggy) clients over raw sockets: ambiguous framing, oversized heads,
slow senders, pipelining, HTTP/1.0. Every refusal is an envelope and nothing is forwarded.

The strict cases run against both of aiohttp's request parsers: llhttp (the C extension, what
the wheels and the image use) and the pure-Python one (``AIOHTTP_NO_EXTENSIONS=1``).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator, Iterator
from time import monotonic

import orjson
import pytest
from aiohttp import http_parser

from tests.conftest import RunningSidecar, SidecarFactory
from tests.raw_upstream import (
    Gate,
    RawUpstream,
    raw_exchange,
    read_answer,
    response,
    running_upstream,
)

Upstream = tuple[RawUpstream, str]
CHAT = b'{"model":"deepseek-chat","messages":[]}'


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with running_upstream() as pair:
        yield pair


@pytest.fixture(autouse=True)
def nothing_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """aiohttp logs what escapes a handler ("Unhandled exception"): nothing may."""
    yield
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.fixture(params=["llhttp", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Which of aiohttp's request parsers the sidecar's connections use."""
    if request.param == "python":
        monkeypatch.setattr(
            "aiohttp.web_protocol.HttpRequestParser", http_parser.HttpRequestParserPy
        )
    elif http_parser.HttpRequestParser is http_parser.HttpRequestParserPy:
        pytest.skip("aiohttp's C extension is not installed (AIOHTTP_NO_EXTENSIONS?)")
    yield request.param


@pytest.fixture
async def sidecar(upstream: Upstream, parser: str, start_sidecar: SidecarFactory) -> RunningSidecar:
    result: RunningSidecar = await start_sidecar(upstream[1], client_timeout_s=0.5)
    return result


async def send(url: str, data: bytes) -> bytes:
    """Write ``data`` and read until the sidecar closes the connection."""
    async with raw_exchange(url) as (reader, writer):
        writer.write(data)
        return await asyncio.wait_for(reader.read(), 5)


def envelope(answer: bytes, status: int, kind: str) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == str(status).encode(), answer[:200]
    assert f"x-sidecar-error: {kind}".encode() in head
    assert orjson.loads(body)["error"]["type"] == kind


POST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
AMBIGUOUS = {
    "content-length-and-chunked": POST
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "two-content-lengths": POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "equal-content-lengths": POST + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    "content-length-list": POST + b"Content-Length: 2, 2\r\n\r\n{}",
    "unknown-coding": POST + b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "bare-lf": b"POST /v1/chat/completions HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}",
    "chunk-size-not-hex": POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-negative": POST + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "chunk-without-crlf": POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "chunked-not-last": POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "obs-fold": POST + b"X-A: a\r\n  b\r\nContent-Length: 2\r\n\r\n{}",
    "nul-in-value": POST + b"X-A: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
    "cr-in-value": POST + b"X-A: a\rb\r\nContent-Length: 2\r\n\r\n{}",
    "space-before-colon": POST + b"Content-Length : 2\r\n\r\n{}",
}


@pytest.mark.parametrize("request_bytes", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
async def test_ambiguous_framing_is_400_and_nothing_is_forwarded(
    request_bytes: bytes, upstream: Upstream, sidecar: RunningSidecar
) -> None:
    answer = await send(
        sidecar.url, request_bytes + b"GET /v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    envelope(answer, 400, "bad_request")
    assert answer.count(b"HTTP/1.") == 1  # the connection closed: nothing after was parsed
    assert upstream[0].received == []


BROKEN_CHUNKS = {
    "not-hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "overflow": b"ffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "no-crlf-after-data": b"5\r\nhelloXX0\r\n\r\n",
}


@pytest.mark.parametrize("chunks", BROKEN_CHUNKS.values(), ids=BROKEN_CHUNKS.keys())
async def test_a_chunk_that_breaks_while_the_body_is_read_is_400(
    chunks: bytes,
    parser: str,
    upstream: Upstream,
    sidecar: RunningSidecar,
) -> None:
    """The head is accepted and the handler is reading (it sent 100 Continue) when the body's
    framing breaks: the read fails, the client gets 400, the bytes behind are never parsed."""
    # The pure-Python parser waits for the bytes a huge chunk size announces: the deadline ends it.
    status, kind = (
        (408, "request_timeout")
        if parser == "python" and b"fff" in chunks
        else (400, "bad_request")
    )
    head = POST + b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with raw_exchange(sidecar.url) as (reader, writer):
        writer.write(head)
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b'5\r\n{"a":\r\n' + chunks + b"GET /v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
    envelope(answer, status, kind)
    assert answer.count(b"HTTP/1.") == 1
    assert upstream[0].received == []
    [line] = sidecar.exchanges()
    assert (line["code"], line["outcome"], line["error_type"]) == (status, "rejected", kind)


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"HTTP/9.9"])
async def test_versions_other_than_1_0_and_1_1_are_400(
    version: bytes, upstream: Upstream, sidecar: RunningSidecar
) -> None:
    """Answered in the client's version ("HTTP/2.0 200") over HTTP/1.1 framing, they would
    confuse every client: refused instead."""
    answer = await send(sidecar.url, b"GET /v1/models " + version + b"\r\nHost: x\r\n\r\n")
    envelope(answer, 400, "bad_request")
    assert answer.startswith(b"HTTP/1.")
    assert upstream[0].received == []


OVERSIZED = {
    "request-line": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-field": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n",
    "header-count": b"GET / HTTP/1.1\r\n"
    + b"".join(b"X-%d: a\r\n" % i for i in range(200))
    + b"\r\n",
}


@pytest.mark.parametrize("request_bytes", OVERSIZED.values(), ids=OVERSIZED.keys())
async def test_an_oversized_head_is_431(
    request_bytes: bytes, upstream: Upstream, sidecar: RunningSidecar
) -> None:
    envelope(await send(sidecar.url, request_bytes), 431, "request_header_too_large")
    assert upstream[0].received == []
    assert [
        line["error_type"] for line in sidecar.log_lines() if line["event"] == "request_rejected"
    ] == ["request_header_too_large"]


async def test_a_head_within_the_limits_is_forwarded(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    big = (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-A: "
        + b"a" * 8000
        + b"\r\n\r\n"
    )
    assert (await send(sidecar.url, big)).startswith(b"HTTP/1.1 200")
    assert upstream[0].received[0].header("X-A") == "a" * 8000


async def test_a_slow_head_is_408_and_the_upstream_is_never_contacted(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    started = monotonic()
    async with raw_exchange(sidecar.url) as (reader, writer):
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
    envelope(answer, 408, "request_timeout")
    assert 0.5 <= monotonic() - started < 3
    assert upstream[0].connections == 0
    assert [
        line["error_type"] for line in sidecar.log_lines() if line["event"] == "request_rejected"
    ] == ["request_timeout"]


async def test_a_trickling_head_cannot_stretch_the_deadline(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    """Slowloris: one byte at a time keeps the socket busy, yet the deadline is per request."""
    started = monotonic()
    async with raw_exchange(sidecar.url) as (reader, writer):
        answer = asyncio.ensure_future(reader.read())
        for byte in b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaa":
            if answer.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)  # the client's pace, not a synchronisation
        envelope(await asyncio.wait_for(answer, 5), 408, "request_timeout")
    assert monotonic() - started < 2
    assert upstream[0].connections == 0


async def test_a_slow_body_is_408_and_the_upstream_is_never_contacted(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    async with raw_exchange(sidecar.url) as (reader, writer):
        writer.write(POST + b"Content-Length: 100\r\n\r\n" + CHAT[:10])
        answer = await asyncio.wait_for(reader.read(), 5)
    envelope(answer, 408, "request_timeout")
    assert upstream[0].connections == 0
    [line] = sidecar.exchanges()
    assert (line["code"], line["outcome"], line["error_type"]) == (
        408,
        "rejected",
        "request_timeout",
    )
    assert (
        sidecar.requests(
            code="408", outcome="rejected", route="chat_completions", model="none", stream="false"
        )
        == 1
    )


async def test_an_idle_keep_alive_connection_is_not_a_slow_client(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    """The deadline starts with a request's first byte, not when the connection went quiet."""
    request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    async with raw_exchange(sidecar.url) as (reader, writer):
        writer.write(request)
        assert (await read_answer(reader)).status == 200
        await asyncio.sleep(0.7)  # longer than client_timeout_s, idle between two requests
        writer.write(request)
        assert (await asyncio.wait_for(read_answer(reader), 5)).status == 200
    assert len(upstream[0].received) == 2


async def test_pipelined_requests_are_answered_in_order(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    fake, _ = upstream
    slow = Gate(asyncio.Event())
    fake.push(
        [slow, response(body=b"first")],
        [response(body=b"second", chunked=True)],
        [response(body=b"third")],
    )
    paths = (b"/v1/models", b"/v1/chat/completions", b"/v1/user/balance")
    async with raw_exchange(sidecar.url) as (reader, writer):
        writer.write(
            b"".join(
                b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" % p for p in paths
            )
        )
        first = asyncio.ensure_future(read_answer(reader))
        await asyncio.wait_for(fake.arrived.wait(), 5)
        assert not first.done()
        slow.event.set()
        answers = [await first] + [await read_answer(reader) for _ in range(2)]
    assert [a.body for a in answers] == [b"first", b"second", b"third"]
    assert [r.request_line.split(b" ")[1] for r in fake.received] == list(paths)


async def test_http_1_0_clients_work(upstream: Upstream, sidecar: RunningSidecar) -> None:
    """A 1.0 client gets a 1.0 answer; a chunked upstream body reaches it close-delimited."""
    fake, _ = upstream
    stream = b"data: {}\n\ndata: [DONE]\n\n"
    fake.push([response(body=b'{"data":[]}')], [response(body=stream, chunked=True)])
    answer = await send(sidecar.url, b"GET /v1/models HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b'{"data":[]}')
    request = b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(CHAT)
    answer = await send(sidecar.url, request + CHAT)
    assert answer.startswith(b"HTTP/1.0 200")
    assert answer.partition(b"\r\n\r\n")[2] == stream
    assert fake.received[1].body == CHAT


async def test_a_compressed_request_body_is_forwarded_as_sent(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    body = gzip.compress(CHAT)
    head = POST + b"Content-Encoding: gzip\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
    answer = await send(sidecar.url, head % len(body) + body)
    assert answer.startswith(b"HTTP/1.1 200")
    [received] = upstream[0].received
    assert received.body == body
    assert received.header("Content-Encoding") == "gzip"
