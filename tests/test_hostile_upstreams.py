"""Hostile upstreams, scripted byte by byte: each case is relayed untouched or fails cleanly
(a 502 envelope before the first byte, a broken response after it, never a clean end)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import orjson
import pytest

from tests.conftest import RunningSidecar, SidecarFactory
from tests.raw_upstream import (
    CLOSE,
    RESET,
    Answer,
    RawUpstream,
    Step,
    raw_exchange,
    read_answer,
    response,
    running_upstream,
)

Upstream = tuple[RawUpstream, str]
CHAT = b'{"model":"deepseek-chat","stream":true,"messages":[]}'
USAGE = b'"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}'
COMPLETION = b'{"id":"x","model":"deepseek-chat","choices":[],' + USAGE + b"}"


@pytest.fixture(autouse=True)
def nothing_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """aiohttp logs what escapes a handler ("Unhandled exception"): nothing may."""
    yield
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with running_upstream() as pair:
        yield pair


@dataclass
class Relay:
    """A sidecar in front of a raw upstream."""

    sidecar: RunningSidecar
    upstream: RawUpstream

    async def exchange(self, *reply: Step, body: bytes = CHAT) -> Answer:
        """Script one upstream reply, send one request through the sidecar, read the answer."""
        self.upstream.push(list(reply))
        async with raw_exchange(self.sidecar.url) as (reader, writer):
            writer.write(REQUEST % len(body) + body)
            return await asyncio.wait_for(read_answer(reader), 10)


REQUEST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"


@pytest.fixture
async def relay(upstream: Upstream, start_sidecar: SidecarFactory) -> Relay:
    sidecar: RunningSidecar = await start_sidecar(upstream[1], idle_timeout_s=5.0)
    return Relay(sidecar, upstream[0])


def only_exchange(sidecar: RunningSidecar) -> dict[str, object]:
    [line] = sidecar.exchanges()
    return line


async def test_informational_responses_are_not_relayed(relay: Relay) -> None:
    """1xx answers precede the real one; the client, which asked for none, gets the final one."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    json = [("Content-Type", "application/json")]
    answer = await relay.exchange(interim + response(headers=json, body=COMPLETION))
    assert (answer.status, answer.body, answer.complete) == (200, COMPLETION, True)
    assert answer.header("Link") is None
    assert only_exchange(relay.sidecar)["output_tokens"] == 3


async def test_a_body_delimited_by_close_is_relayed_whole(relay: Relay) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
    answer = await relay.exchange(head + COMPLETION, CLOSE)
    assert (answer.status, answer.body, answer.complete) == (200, COMPLETION, True)
    line = only_exchange(relay.sidecar)
    assert (line["outcome"], line["output_tokens"]) == ("completed", 3)


async def test_chunked_trailers_end_the_body_cleanly(relay: Relay) -> None:
    """Trailers are read and dropped: aiohttp's response writer cannot send them on."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    chunks = b"%x\r\n%s\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n" % (
        len(COMPLETION),
        COMPLETION,
    )
    answer = await relay.exchange(head + b"Trailer: X-Checksum\r\n\r\n" + chunks)
    assert (answer.status, answer.body, answer.complete) == (200, COMPLETION, True)
    assert only_exchange(relay.sidecar)["outcome"] == "completed"


@pytest.mark.parametrize("end", [CLOSE, RESET], ids=["close", "reset"])
async def test_a_body_shorter_than_its_content_length_breaks_the_response(
    end: Step, relay: Relay
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    answer = await relay.exchange(head + COMPLETION, end)
    assert answer.status == 200
    assert not answer.complete  # never a clean end
    assert answer.body == COMPLETION
    assert only_exchange(relay.sidecar)["outcome"] == "upstream_aborted"


async def test_a_chunked_stream_cut_short_breaks_the_response(relay: Relay) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    event = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    answer = await relay.exchange(head + b"%x\r\n%s\r\n" % (len(event), event), CLOSE)
    assert (answer.status, answer.body, answer.complete) == (200, event, False)
    line = only_exchange(relay.sidecar)
    assert (line["outcome"], line["stream"]) == ("upstream_aborted", True)


async def test_a_10_mb_sse_line_is_relayed_with_bounded_memory(
    relay: Relay,
) -> None:
    """No newline for 10 MB: every byte is relayed, the SSE decoder gives up at its cap
    (``oversize``) and the sidecar never holds the line: peak traced memory stays far below it."""
    block = b"a" * (64 << 10)
    blocks = 160  # 10 MiB
    tail = b"\n\ndata: [DONE]\n\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    relay.upstream.push([head, b"data: ", *[block] * blocks, tail, CLOSE])
    expected = hashlib.sha256(b"data: " + block * blocks + tail).hexdigest()
    tracemalloc.start()
    try:
        async with raw_exchange(relay.sidecar.url) as (reader, writer):
            writer.write(REQUEST % len(CHAT) + CHAT)
            head_in = await reader.readuntil(b"\r\n\r\n")
            digest, size = hashlib.sha256(), 0
            while True:  # de-chunk incrementally: the test itself must not hold 10 MB either
                length = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                if not length:
                    break
                while length:
                    piece = await reader.read(min(length, 1 << 16))
                    digest.update(piece)
                    length -= len(piece)
                    size += len(piece)
                await reader.readexactly(2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert head_in.startswith(b"HTTP/1.1 200")
    assert digest.hexdigest() == expected and size == 6 + len(block) * blocks + len(tail)
    assert peak < 4 << 20, f"peak traced memory {peak / 2**20:.1f} MiB"
    line = only_exchange(relay.sidecar)
    assert (line["outcome"], line["parse_error"]) == ("completed", "oversize")
    assert (
        relay.sidecar.value("llm_sidecar_parse_errors_total", upstream="deepseek", kind="oversize")
        == 1
    )


async def test_gzip_that_turns_invalid_is_relayed_untouched(relay: Relay) -> None:
    packed = gzip.compress(COMPLETION + b" " * 4096)
    broken = packed[: len(packed) // 2] + b"\xff" * 64 + packed[len(packed) // 2 :]
    headers = [("Content-Type", "application/json"), ("Content-Encoding", "gzip")]
    answer = await relay.exchange(response(headers=headers, body=broken))
    assert (answer.status, answer.body, answer.complete) == (200, broken, True)
    assert answer.header("Content-Encoding") == "gzip"
    line = only_exchange(relay.sidecar)
    assert (line["outcome"], line["parse_error"]) == ("completed", "decompress")
    assert (
        relay.sidecar.value(
            "llm_sidecar_parse_errors_total", upstream="deepseek", kind="decompress"
        )
        == 1
    )


async def test_non_ascii_and_invalid_utf8_header_values_are_relayed(
    relay: Relay,
) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"X-Utf8: caf\xc3\xa9\r\nX-Latin1: caf\xe9\r\nX-Junk: \xff\xfe\x80\r\n"
        b"Content-Length: %d\r\n\r\n" % len(COMPLETION)
    )
    answer = await relay.exchange(head + COMPLETION)
    assert (answer.status, answer.body, answer.complete) == (200, COMPLETION, True)
    assert b"X-Utf8: caf\xc3\xa9\r\n" in answer.head
    # Not UTF-8: aiohttp cannot write the bytes back, so each invalid one is shown as U+FFFD.
    assert b"X-Latin1: caf\xef\xbf\xbd\r\n" in answer.head
    assert b"X-Junk: " + b"\xef\xbf\xbd" * 3 + b"\r\n" in answer.head


async def test_duplicate_set_cookie_headers_all_reach_the_client(
    relay: Relay,
) -> None:
    cookies = [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; HttpOnly")]
    answer = await relay.exchange(response(headers=cookies, body=COMPLETION))
    assert answer.headers("Set-Cookie") == ["a=1; Path=/", "b=2; HttpOnly"]


async def test_a_body_in_answer_to_head_is_a_502_and_the_connection_is_not_reused(
    relay: Relay,
) -> None:
    relay.upstream.push([response(body=b"{}")], [response(body=COMPLETION)])
    for method, status in ((b"HEAD", 502), (b"GET", 200)):
        async with raw_exchange(relay.sidecar.url) as (reader, writer):
            writer.write(method + b" /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 %d" % status)
    assert relay.upstream.connections == 2


NOT_HTTP = {
    "garbage": b"NOT HTTP AT ALL\r\n\r\n",
    "status-not-a-number": b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
    "tls-alert": b"\x15\x03\x03\x00\x02\x02\x46",
    "http2-settings": b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64",
    "bad-header-line": b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
    "content-length-twice": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
}


@pytest.mark.parametrize("reply", NOT_HTTP.values(), ids=NOT_HTTP.keys())
async def test_an_answer_that_is_not_http_is_a_502_envelope(reply: bytes, relay: Relay) -> None:
    answer = await relay.exchange(reply, CLOSE)
    assert answer.status == 502
    assert answer.header("x-sidecar-error") == "upstream_bad_response"
    assert orjson.loads(answer.body)["error"]["type"] == "upstream_bad_response"
    line = only_exchange(relay.sidecar)
    assert (line["code"], line["error_type"]) == (502, "upstream_bad_response")


async def test_negative_token_counts_are_no_counts_and_the_exchange_is_still_recorded(
    relay: Relay,
) -> None:
    usage = b'"usage":{"prompt_tokens":-7,"completion_tokens":3,"prompt_cache_hit_tokens":9}'
    body = b'{"id":"x","model":"deepseek-chat","choices":[],' + usage + b"}"
    answer = await relay.exchange(
        response(headers=[("Content-Type", "application/json")], body=body)
    )
    assert (answer.status, answer.body) == (200, body)
    line = only_exchange(relay.sidecar)  # the log line is written: the record did not fail
    assert (line["input_tokens"], line["output_tokens"]) == (None, 3)
    tokens = relay.sidecar.value(
        "llm_tokens_total", upstream="deepseek", model="deepseek-chat", type="output"
    )
    assert tokens == 3


async def test_control_characters_in_the_reason_or_a_value_become_replacement_characters(
    relay: Relay,
) -> None:
    """aiohttp's writer refuses C0 controls (but HTAB) and DEL in a head; llhttp lets them
    through in a reason phrase, so they are replaced rather than crash the response."""
    head = (
        b"HTTP/1.1 200 O\x01K\x7f\r\nContent-Type: application/json\r\nX-Tab: a\tb\r\n"
        b"Content-Length: %d\r\n\r\n" % len(COMPLETION)
    )
    answer = await relay.exchange(head + COMPLETION)
    assert (answer.status, answer.body, answer.complete) == (200, COMPLETION, True)
    assert answer.head.startswith(b"HTTP/1.1 200 O\xef\xbf\xbdK\xef\xbf\xbd\r\n")
    assert b"X-Tab: a\tb\r\n" in answer.head
    assert only_exchange(relay.sidecar)["outcome"] == "completed"
