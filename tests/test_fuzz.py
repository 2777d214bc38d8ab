"""Fuzzing a running sidecar over real sockets: generated upstream responses and client requests.

Invariants, whatever the bytes: the client gets an answer (or a clean close) within the
timeouts, nothing is logged as an error (aiohttp logs whatever escapes a handler), each
forwarded request ends as exactly one exchange line, and when the upstream's bytes were valid
HTTP the client receives them unaltered: status, reason, end-to-end headers and body.

One sidecar serves every example of a test (the health check for function-scoped fixtures is
silenced on purpose). Examples are few by default so ``make test`` stays fast;
``HYPOTHESIS_PROFILE=long`` runs thousands.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import string
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RunningSidecar, SidecarFactory
from tests.raw_upstream import (
    CLOSE,
    RESET,
    Answer,
    RawUpstream,
    Step,
    raw_exchange,
    read_answer,
    running_upstream,
)

CLIENT_TIMEOUT_S = 0.25
IDLE_TIMEOUT_S = 1.0
ANSWER_WITHIN_S = CLIENT_TIMEOUT_S + IDLE_TIMEOUT_S + 5  # generous: the machine may be busy
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
fuzz = settings(
    max_examples=settings().max_examples if LONG else 60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
REQUEST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
CHAT = b'{"model":"deepseek-chat","messages":[]}'
SIDECAR_ERRORS = {"upstream_bad_response", "upstream_unreachable", "upstream_timeout"}


@dataclass
class Relay:
    sidecar: RunningSidecar
    upstream: RawUpstream
    caplog: pytest.LogCaptureFixture

    async def finished(self, count: int) -> list[dict[str, object]]:
        """The exchange lines once there are ``count``: the line is written just after the
        client's last byte, and the log offers nothing to await, so poll with a bound."""
        for _ in range(500):
            lines = self.sidecar.exchanges()
            if len(lines) >= count:
                return lines
            await asyncio.sleep(0.01)
        return self.sidecar.exchanges()

    def errors(self) -> list[str]:
        return [r.getMessage() for r in self.caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
async def relay(
    start_sidecar: SidecarFactory, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Relay]:
    async with running_upstream() as (upstream, url):
        sidecar = await start_sidecar(
            url, client_timeout_s=CLIENT_TIMEOUT_S, idle_timeout_s=IDLE_TIMEOUT_S
        )
        yield Relay(sidecar, upstream, caplog)


@pytest.fixture(autouse=True)
def nothing_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# --- upstream responses -------------------------------------------------------------------

TOKEN = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=16)
VALUE = st.text(
    string.ascii_letters + string.digits + " !#$%&'()*+,./:;<=>?@[]^_`{|}~-", max_size=40
)
STATUS = st.sampled_from([200, 201, 202, 400, 401, 402, 403, 404, 422, 429, 500, 502, 503])
REASON = st.text(string.ascii_letters + " ", min_size=1, max_size=20).map(str.strip).filter(bool)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
USAGE = st.fixed_dictionaries(
    {"prompt_tokens": st.integers(0, 10**6), "completion_tokens": st.integers(0, 10**6)}
)


@st.composite
def sse_body(draw: st.DrawFn) -> bytes:
    """Events with random fields: data (JSON or not), event, id, retry, comments, usage."""
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["data", "json", "usage", "event", "id", "retry", "comment"]))
        if kind == "json":
            delta = {"choices": [{"delta": {"content": draw(st.text(max_size=10))}}]}
            lines.append(b"data: " + orjson.dumps(delta))
        elif kind == "usage":
            lines.append(b"data: " + orjson.dumps({"choices": [], "usage": draw(USAGE)}))
        elif kind == "comment":
            lines.append(b": keep-alive")
        else:
            value = draw(st.text(string.printable.replace("\r", "").replace("\n", ""), max_size=30))
            lines.append(f"{kind}: {value}".encode())
        if draw(st.booleans()):
            lines.append(b"")  # end of event
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    return eol.join(lines) + eol + b"data: [DONE]" + eol + eol


@st.composite
def valid_response(draw: st.DrawFn) -> tuple[bytes, int, str, list[tuple[str, str]], bytes]:
    """A well-formed response: raw bytes and what the client must see (status, reason,
    end-to-end headers, body)."""
    status, reason = draw(STATUS), draw(REASON)
    shape = draw(st.sampled_from(["json", "gzip-json", "sse", "bytes"]))
    headers = [
        ("X-" + name, value.strip())
        for name, value in draw(st.lists(st.tuples(TOKEN, VALUE), max_size=5))
    ]
    if shape == "sse":
        headers.append(("Content-Type", "text/event-stream"))
        body = draw(sse_body())
    elif shape == "bytes":
        body = draw(st.binary(max_size=3000))
    else:
        doc = {"model": "m", "choices": [], "usage": draw(USAGE), "x": draw(JSON)}
        body = orjson.dumps(doc)
        headers.append(("Content-Type", "application/json"))
        if shape == "gzip-json":
            body = gzip.compress(body, mtime=0)
            headers.append(("Content-Encoding", "gzip"))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    head = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    if framing == "length":
        head.append(f"Content-Length: {len(body)}")
        payload = body
    elif framing == "chunked":
        head.append("Transfer-Encoding: chunked")
        payload = (
            b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in draw(splits(body)) if c) + b"0\r\n\r\n"
        )
    else:
        head.append("Connection: close")
        payload = body
    raw = "\r\n".join(head).encode() + b"\r\n\r\n" + payload
    return raw, status, reason, headers, body


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut at random points (the pieces join back to ``data``)."""
    return st.lists(st.integers(0, len(data)), max_size=6).map(
        lambda cuts: [
            data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True)
        ]
    )


async def ask(relay: Relay, steps: list[Step]) -> Answer:
    relay.upstream.push(steps)
    async with raw_exchange(relay.sidecar.url) as (reader, writer):
        writer.write(REQUEST % len(CHAT) + CHAT)
        return await asyncio.wait_for(read_answer(reader), ANSWER_WITHIN_S)


@fuzz
@given(response=valid_response(), data=st.data())
async def test_valid_upstream_bytes_reach_the_client_unaltered(
    relay: Relay,
    response: tuple[bytes, int, str, list[tuple[str, str]], bytes],
    data: st.DataObject,
) -> None:
    raw, status, reason, headers, body = response
    pieces: list[Step] = list(data.draw(splits(raw)))
    if b"Connection: close" in raw.partition(b"\r\n\r\n")[0]:
        pieces.append(CLOSE)
    before = len(relay.sidecar.exchanges())
    answer = await ask(relay, pieces)
    assert (answer.status, answer.complete, answer.body) == (status, True, body)
    assert answer.head.split(b"\r\n", 1)[0].endswith(f" {status} {reason}".encode())
    for name, value in headers:
        assert value in answer.headers(name), (name, answer.head)
    lines = await relay.finished(before + 1)
    assert len(lines) == before + 1
    assert lines[-1]["outcome"] == "completed"


@st.composite
def hostile_response(draw: st.DrawFn) -> list[Step]:
    """A valid response mangled (cut, spliced, flipped) or plain noise, then a close or reset."""
    raw = draw(valid_response())[0]
    how = draw(st.sampled_from(["cut", "insert", "flip", "noise", "status-line"]))
    if how == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif how == "insert":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=20)) + raw[at:]
    elif how == "flip":
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    elif how == "noise":
        raw = draw(st.binary(max_size=200))
    else:
        raw = draw(st.binary(max_size=40)) + raw.partition(b"\r\n")[2]
    return [*draw(splits(raw)), draw(st.sampled_from([CLOSE, RESET]))]


@fuzz
@given(steps=hostile_response())
async def test_hostile_upstream_bytes_end_cleanly(relay: Relay, steps: list[Step]) -> None:
    """A head always reaches the client: the upstream's, or the sidecar's 502/504 envelope."""
    before = len(relay.sidecar.exchanges())
    answer = await ask(relay, steps)
    error = answer.header("x-sidecar-error")
    if error is not None:
        assert error in SIDECAR_ERRORS
        assert orjson.loads(answer.body)["error"]["type"] == error
    lines = await relay.finished(before + 1)
    assert len(lines) == before + 1


# --- client requests ----------------------------------------------------------------------

FIELD = (
    st.sampled_from(
        ["Content-Length", "Transfer-Encoding", "Expect", "Upgrade", "Content-Type", "X-A", "Host"]
    )
    | TOKEN
)
FIELD_VALUE = st.binary(max_size=30) | st.sampled_from(
    [b"chunked", b"100-continue", b"websocket", b"0", b"5", b"-1", b"1, 2", b"gzip, chunked"]
)


@st.composite
def hostile_request(draw: st.DrawFn) -> bytes:
    """A request line, headers and a body, each valid or not; always ``Connection: close``,
    so the sidecar ends the connection once it has answered."""
    method = draw(
        st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"HEAD", b"P@ST"])
    )
    path = b"/v1/" + draw(st.binary(max_size=30)).replace(b" ", b"").replace(b"\r\n", b"")
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.x"]))
    fields = draw(st.lists(st.tuples(FIELD, FIELD_VALUE), max_size=6))
    head = [method + b" " + path + b" " + version, b"Connection: close"]
    head += [name.encode() + b": " + value for name, value in fields]
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@fuzz
@given(request=hostile_request(), data=st.data())
async def test_hostile_client_requests_are_answered_or_closed(
    relay: Relay, request: bytes, data: st.DataObject
) -> None:
    forwarded = len(relay.upstream.received)
    before = len(relay.sidecar.exchanges())
    async with raw_exchange(relay.sidecar.url) as (reader, writer):
        for piece in data.draw(splits(request)):
            writer.write(piece)
        try:
            out = await asyncio.wait_for(reader.read(), ANSWER_WITHIN_S)
        except ConnectionResetError:
            out = b""
    assert out == b"" or out.startswith(b"HTTP/1."), out[:100]
    head, _, body = out.partition(b"\r\n\r\n")
    if b"x-sidecar-error:" in head and not request.startswith(b"HEAD "):  # HEAD: no body
        assert orjson.loads(body)["error"]["type"]
    sent_on = len(relay.upstream.received) - forwarded
    assert sent_on <= 1
    lines = await relay.finished(before + sent_on)
    assert len(lines) - before >= sent_on
