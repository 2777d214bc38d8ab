"""The lean upstream leg (``relay.http1``), seen from a raw upstream socket.

What the rest of the suite checks through it (byte-exact relaying, framing, hostile answers,
TLS, stale pooled connections, retries) is not repeated here; these are the properties of the
leg itself: the request bytes, the pool's reuse and idle expiry, ``HEAD`` keep-alive, the head
bound, and back-pressure that does not count as a silent upstream.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from sidecar.relay.http1 import HIGH_WATER, MAX_HEAD_BYTES
from sidecar.relay.pool import POOL_IDLE_S
from tests.conftest import RunningSidecar, SidecarFactory
from tests.raw_upstream import (
    Gate,
    Pause,
    RawUpstream,
    raw_exchange,
    read_answer,
    response,
    running_upstream,
)

Upstream = tuple[RawUpstream, str]
CHAT = b'{"model":"deepseek-chat","messages":[]}'
ANSWER = b'{"id":"1","model":"deepseek-chat","choices":[]}'
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with running_upstream() as pair:
        yield pair


@pytest.fixture
async def sidecar(upstream: Upstream, start_sidecar: SidecarFactory) -> RunningSidecar:
    result: RunningSidecar = await start_sidecar(upstream[1], idle_timeout_s=1.0)
    return result


async def send(sidecar: RunningSidecar, request: bytes) -> tuple[int, bytes]:
    async with raw_exchange(sidecar.url) as (reader, writer):
        writer.write(request)
        answer = await asyncio.wait_for(read_answer(reader), 10)
    return answer.status, answer.body


async def test_the_request_is_written_as_aiohttp_writes_it(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    """Host first, the relayed headers in their order, Content-Length last (0 when a method
    other than GET, HEAD, OPTIONS or TRACE has no body); head and body in one piece."""
    raw, url = upstream
    host = url.removeprefix("http://")
    requests = [
        b"POST /v1/chat/completions?x=%%2F HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nX-Two: 2\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(CHAT), CHAT),
        b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n",
        b"DELETE /v1/files/f HTTP/1.1\r\nHost: a\r\n\r\n",
    ]
    for request in requests:
        raw.push([response(body=ANSWER)])
        assert await send(sidecar, request) == (200, ANSWER)
    post, get, delete = raw.received
    lines = post.head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions?x=%2F HTTP/1.1"
    assert lines[1] == f"Host: {host}"
    assert lines[2:4] == ["X-One: 1", "X-Two: 2"]
    assert lines[-3:] == [f"Content-Length: {len(CHAT)}", "", ""]
    assert post.body == CHAT
    assert get.header("Content-Length") is None and get.body == b""
    assert delete.header("Content-Length") == "0"
    assert raw.connections == 1  # one pooled connection carried all three


async def test_idle_pooled_connections_are_closed_before_an_upstream_would(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    raw, _ = upstream
    get = b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n"
    assert (await send(sidecar, get))[0] == 200
    await asyncio.sleep(POOL_IDLE_S / 2)
    assert (await send(sidecar, get))[0] == 200
    assert raw.connections == 1
    await asyncio.sleep(POOL_IDLE_S + 0.5)
    assert not raw._writers  # the sidecar closed it: the upstream's side has ended
    assert (await send(sidecar, get))[0] == 200
    assert raw.connections == 2


async def test_a_head_response_keeps_its_connection(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    """The announced length of a HEAD answer is not waited for, and the connection is reused."""
    raw, _ = upstream
    raw.push([b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"], [response(body=ANSWER)])
    async with raw_exchange(sidecar.url) as (reader, writer):
        writer.write(b"HEAD /v1/models HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 1234" in head
    assert await send(sidecar, b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n") == (200, ANSWER)
    assert raw.connections == 1


async def test_a_response_head_above_the_bound_is_a_bad_response(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    raw, _ = upstream
    padding = [(f"X-Pad-{n}", "p" * 4000) for n in range(MAX_HEAD_BYTES // 4000 + 1)]
    raw.push([response(headers=padding, body=ANSWER)])
    status, body = await send(
        sidecar,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
        % (len(CHAT), CHAT),
    )
    assert status == 502
    assert orjson.loads(body)["error"]["type"] == "upstream_bad_response"
    [line] = sidecar.exchanges()
    assert line["error_type"] == "upstream_bad_response"


async def test_a_slow_client_is_not_a_silent_upstream(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    """While reading is paused for a client that does not read, the read timeout (1 s here)
    does not run: the body arrives whole after the client waited three times as long."""
    raw, _ = upstream
    body = os.urandom(40 * HIGH_WATER)
    raw.push([response(body=body)])
    async with (
        aiohttp.ClientSession(auto_decompress=False) as client,
        client.get(sidecar.url + "/v1/files/blob/content") as answer,
    ):
        assert answer.status == 200
        await asyncio.sleep(3.0)  # nothing read: the sidecar pauses the upstream socket
        assert await answer.read() == body
    [line] = sidecar.exchanges()
    assert line["outcome"] == "completed"


async def test_an_upstream_silent_mid_body_is_a_timeout_not_a_clean_end(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    raw, _ = upstream
    raw.push([STREAM_HEAD, b"5\r\nhello\r\n", Pause(3.0)])
    async with raw_exchange(sidecar.url) as (reader, writer):
        writer.write(b"GET /v1/stream HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = await asyncio.wait_for(read_answer(reader), 10)
    assert (answer.status, answer.body, answer.complete) == (200, b"hello", False)
    [line] = sidecar.exchanges()
    assert line["outcome"] == "upstream_timeout"


async def test_a_head_whose_body_is_still_to_come_is_relayed_at_once(
    upstream: Upstream, sidecar: RunningSidecar
) -> None:
    """A stream's head reaches the client before its first event exists upstream."""
    raw, _ = upstream
    first_event = asyncio.Event()
    raw.push([STREAM_HEAD, Gate(first_event), b"7\r\ndata: 1\r\n0\r\n\r\n"])
    async with raw_exchange(sidecar.url) as (reader, writer):
        writer.write(b"GET /v1/stream HTTP/1.1\r\nHost: a\r\n\r\n")
        relayed = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert relayed.startswith(b"HTTP/1.1 200 OK\r\n")
        first_event.set()
        answer = await asyncio.wait_for(read_answer_body(reader), 10)
    assert answer == b"data: 1"


async def read_answer_body(reader: asyncio.StreamReader) -> bytes:
    """The rest of a chunked body whose head was already read."""
    parts = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
    return b"".join(parts)


async def test_a_handshake_that_never_completes_is_a_connect_timeout(
    start_sidecar: SidecarFactory,
) -> None:
    """The connect timeout covers TCP and TLS together: a TLS upstream that accepts the
    connection and never answers the handshake is given up on after ``connect_timeout_s``."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sidecar = await start_sidecar(f"https://127.0.0.1:{port}", connect_timeout_s=0.5)
        started = asyncio.get_running_loop().time()
        status, body = await send(sidecar, b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n")
        waited = asyncio.get_running_loop().time() - started
    finally:
        for writer in accepted:
            writer.close()
        server.close()
    assert status == 502 and 0.5 <= waited < 5
    error = orjson.loads(body)["error"]
    assert error["type"] == "upstream_unreachable"
    assert error["message"] == "timed out connecting to the upstream"
