"""Readers: usage, model, first data, first/last token from every wire dialect."""

from __future__ import annotations

import gzip
import itertools
import zlib
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.exchange import Exchange, Usage
from sidecar.observe.readers import carries_content, reader_for
from tests.fake_upstream import fixture


def exchange(route: str = "chat_completions") -> Exchange:
    return Exchange("rid", "POST", route, received_at=0.0, started_wall=datetime.now(UTC))


def feed_events(
    name: str, route: str = "chat_completions", finish_reasons: bool = False
) -> Exchange:
    """Feed a fixture one event per read, the clock ticking 1 s per read."""
    ex = exchange(route)
    reader = reader_for(ex, "text/event-stream", None, finish_reasons=finish_reasons)
    for tick, event in enumerate(e + b"\n\n" for e in fixture(name).split(b"\n\n") if e):
        reader.feed(event, float(tick + 1))
    reader.close(99.0)
    return ex


def test_deepseek_stream_usage_cache_split_and_timings() -> None:
    ex = feed_events("deepseek-chat-stream.sse")
    assert ex.usage == Usage(input=1220, output=12, cache_hit=1152, cache_miss=68)
    assert ex.reported_model == "deepseek-chat"
    # reads 1-2 are ": keep-alive" comments; read 3 is the first data (role-only)
    assert ex.saw_queue_signal and ex.first_data_at == 3.0
    assert ex.first_token_at == 4.0  # "Sure": the role-only chunk does not count
    assert ex.last_token_at == 15.0  # read 16, the finish chunk, carries no content


def test_deepseek_stream_without_include_usage() -> None:
    ex = feed_events("deepseek-chat-stream-no-include-usage.sse")
    assert ex.usage is not None and ex.usage.input == 14 and ex.usage.output == 7


def test_reasoning_tokens_and_reasoning_content_counts_as_first_token() -> None:
    ex = feed_events("deepseek-reasoner-stream.sse")
    assert ex.usage is not None
    assert ex.usage.reasoning is not None and 0 < ex.usage.reasoning <= (ex.usage.output or 0)
    assert ex.first_token_at == 5.0  # 3 comments, then the role-only chunk, then reasoning


def test_v4_thinking_stream() -> None:
    ex = feed_events("deepseek-v4-flash-thinking-stream.sse")
    assert ex.reported_model == "deepseek-v4-flash"
    assert ex.usage is not None and ex.usage.input == 3209


def test_tool_call_fragments_are_content() -> None:
    ex = feed_events("deepseek-chat-toolcall-stream.sse")
    assert ex.first_token_at == 2.0 and ex.last_token_at == 12.0
    assert not ex.saw_queue_signal


def test_openai_trailing_usage_chunk() -> None:
    ex = feed_events("openai-stream-include-usage.sse")
    assert ex.usage == Usage(input=1312, output=8, cache_hit=1152, cache_miss=160, reasoning=0)


def test_anthropic_stream_adds_cache_reads_to_input() -> None:
    ex = feed_events("anthropic-messages-stream.sse", route="anthropic_messages")
    assert ex.usage == Usage(
        input=21 + 2048, output=14, cache_hit=2048, cache_miss=21, cache_write=0
    )
    assert ex.reported_model == "claude-sonnet-4-5-20250929"
    assert ex.first_token_at == 4.0  # first content_block_delta, after start and ping


def test_responses_api_completed_event() -> None:
    ex = exchange("responses")
    reader = reader_for(ex, "text/event-stream", None)
    reader.feed(
        b'event: response.created\ndata: {"type":"response.created","response":'
        b'{"model":"deepseek-flash","usage":null}}\n\n',
        1.0,
    )
    reader.feed(
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"delta":"Hi"}\n\n',
        2.0,
    )
    reader.feed(
        b'event: response.completed\ndata: {"type":"response.completed","response":{"model":'
        b'"deepseek-flash","usage":{"input_tokens":300,"input_tokens_details":{"cached_tokens":256},'
        b'"output_tokens":20,"output_tokens_details":{"reasoning_tokens":5},"total_tokens":320}}}\n\n',
        3.0,
    )
    assert ex.reported_model == "deepseek-flash"
    assert ex.first_token_at == 2.0
    assert ex.usage == Usage(input=300, output=20, cache_hit=256, cache_miss=44, reasoning=5)


def test_gzipped_json_with_leading_blank_lines_is_a_queue_signal() -> None:
    raw = gzip.compress(fixture("deepseek-chat-nonstream.json"))
    ex = exchange()
    reader = reader_for(ex, "application/json", "gzip")
    for tick, i in enumerate(range(0, len(raw), 7)):
        reader.feed(raw[i : i + 7], float(tick))
    reader.close(100.0)
    assert ex.saw_queue_signal and ex.first_data_at is not None
    assert ex.usage is not None and ex.usage.cache_hit == 1152 and ex.usage.input == 1234


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
def test_deflate_in_both_framings(wbits: int) -> None:
    compressor = zlib.compressobj(wbits=wbits)
    raw = compressor.compress(fixture("deepseek-reasoner-nonstream.json")) + compressor.flush()
    ex = exchange()
    reader = reader_for(ex, "application/json; charset=utf-8", "deflate")
    reader.feed(raw, 1.0)
    reader.close(2.0)
    assert ex.usage is not None and ex.usage.reasoning is not None
    assert not ex.saw_queue_signal and ex.parse_error is None


def test_deepseek_429_reports_the_concurrency_limit() -> None:
    ex = exchange()
    ex.status = 429
    reader = reader_for(ex, "application/json", None)
    reader.feed(fixture("deepseek-error-429.json"), 1.0)
    reader.close(1.0)
    assert ex.limits.reported_concurrency_limit == 40
    assert ex.usage is None


@pytest.mark.parametrize(
    ("content_type", "encoding", "body", "kind"),
    [
        ("application/json", None, b'{"truncated": ', "json"),
        ("application/json", "gzip", b"not gzip at all", "decompress"),
        ("application/json", "br", b"\x0b\x02\x80", "decompress"),
        ("text/event-stream", None, b"data: {not json}\n\n", "sse"),
    ],
)
def test_undecodable_input_is_one_parse_error(
    content_type: str, encoding: str | None, body: bytes, kind: str
) -> None:
    ex = exchange()
    reader = reader_for(ex, content_type, encoding)
    reader.feed(body, 1.0)
    reader.close(2.0)
    assert ex.parse_error == kind


def test_unknown_media_types_are_not_observed() -> None:
    ex = exchange()
    reader = reader_for(ex, "application/octet-stream", None)
    reader.feed(b"\x00\x01", 1.0)
    reader.close(1.0)
    assert ex.first_data_at is None and ex.parse_error is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"delta":{"role":"assistant","content":""}}', False),
        (b'{"delta":{"content":null,"reasoning_content":""}}', False),
        (b'{"delta":{"content":"Hi"}}', True),
        (b'{"delta":{"content":null,"reasoning_content":"We"}}', True),
        (b'{"delta":{"tool_calls":[{"index":0}]}}', True),
        (b'{"delta":{"content":"say \\"content\\":\\"\\""}}', True),
        (b'{"choices":[],"usage":{"prompt_tokens":1}}', False),
        (b'{"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}', True),
        (b'{"type":"ping"}', False),
        (b"[DONE]", False),
    ],
)
def test_carries_content(data: bytes, expected: bool) -> None:
    assert carries_content(data) is expected


FIXTURE_STREAMS = (
    "deepseek-chat-stream.sse",
    "deepseek-reasoner-stream.sse",
    "deepseek-chat-toolcall-stream.sse",
    "deepseek-v4-flash-thinking-stream.sse",
    "openai-stream-include-usage.sse",
    "anthropic-messages-stream.sse",
)
# Lines a stream may carry between its events: comments (one with a content marker in its text),
# CRLF framing, an event name, a blank line.
EXTRAS = (
    b": keep-alive\n\n",
    b': {"content":"not a token"}\n\n',
    b'data: {"choices":[{"delta":{"content":"crlf"}}]}\r\n\r\n',
    b'event: ping\ndata: {"choices":[{"delta":{"content":""}}]}\n\n',
    b"\n",
)


def observed(chunks: list[bytes], fast: bool, finish_reasons: bool = True) -> tuple[object, ...]:
    ex = exchange()
    reader = reader_for(ex, "text/event-stream", None, finish_reasons=finish_reasons)
    reader.fast_path = fast  # type: ignore[attr-defined]
    for tick, chunk in enumerate(chunks):
        reader.feed(chunk, float(tick + 1))
    reader.close(999.0)
    return (ex.first_data_at, ex.first_token_at, ex.last_token_at, ex.usage, ex.reported_model,
            ex.saw_queue_signal, ex.parse_error, ex.response_id, ex.finish_reasons)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(FIXTURE_STREAMS),
    inserts=st.lists(st.tuples(st.integers(0, 40), st.sampled_from(EXTRAS)), max_size=6),
    cuts=st.lists(st.integers(1, 4000), max_size=12),
)
def test_the_chunk_fast_path_observes_exactly_what_event_by_event_decoding_does(
    name: str, inserts: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    events = [e + b"\n\n" for e in fixture(name).split(b"\n\n") if e]
    for at, extra in inserts:
        events.insert(min(at, len(events)), extra)
    body = b"".join(events)
    # Reads along event boundaries (the common case: one event per read) and arbitrary cuts.
    by_event = events
    bounds = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    by_cut = [body[a:b] for a, b in itertools.pairwise(bounds)]
    for chunks in (by_event, by_cut):
        for finish in (True, False):
            fast = observed(chunks, fast=True, finish_reasons=finish)
            assert fast == observed(chunks, fast=False, finish_reasons=finish)


FIRST = b'data: {"model":"m","choices":[{"delta":{"content":"hi"}}]}\n\n'
EMPTY = b'data: {"choices":[{"delta":{"content":""}}]}\n\n'


@pytest.mark.parametrize(
    ("read", "last_token_at"),
    [
        # a comment quoting a text field is not a token
        (EMPTY + b': {"content":"not a token"}\n\n', 1.0),
        # one read holding an empty delta, then a token: the token counts
        (EMPTY + b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n', 2.0),
    ],
)  # fmt: skip
@pytest.mark.parametrize("fast", [True, False])
def test_reads_after_the_first_token(read: bytes, last_token_at: float, fast: bool) -> None:
    ex = exchange()
    reader = reader_for(ex, "text/event-stream", None)
    reader.fast_path = fast  # type: ignore[attr-defined]
    reader.feed(FIRST, 1.0)
    reader.feed(read, 2.0)
    assert (ex.first_token_at, ex.last_token_at) == (1.0, last_token_at)


@pytest.mark.parametrize(
    ("name", "response_id", "finish_reasons"),
    [
        ("deepseek-chat-stream.sse", "3c9e41d2-8b7a-4f0e-9d61-2a5b7c0e4f18", ("stop",)),
        ("deepseek-chat-toolcall-stream.sse", None, ("tool_calls",)),
        ("openai-stream-include-usage.sse", None, ("stop",)),
        ("anthropic-messages-stream.sse", "msg_01Fq8WzK3vTn6LpR2cXy9HdB", ("end_turn",)),
    ],
)
def test_stream_response_id_and_finish_reasons(
    name: str, response_id: str | None, finish_reasons: tuple[str, ...]
) -> None:
    route = "anthropic_messages" if name.startswith("anthropic") else "chat_completions"
    ex = feed_events(name, route, finish_reasons=True)
    if response_id is not None:
        assert ex.response_id == response_id
    else:
        assert ex.response_id  # every fixture's first event carries an id
    assert ex.finish_reasons == finish_reasons


def test_finish_reasons_of_several_choices_are_ordered_by_index() -> None:
    ex = exchange()
    reader = reader_for(ex, "text/event-stream", None, finish_reasons=True)
    for tick, event in enumerate(
        (
            b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"a"}},'
            b'{"index":1,"delta":{"content":"b"}}]}\n\n',
            b'data: {"id":"c1","choices":[{"index":1,"delta":{},"finish_reason":"length"}]}\n\n',
            b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
        )
    ):
        reader.feed(event, float(tick))
    reader.close(9.0)
    assert (ex.response_id, ex.finish_reasons) == ("c1", ("stop", "length"))


def test_json_response_id_and_finish_reasons() -> None:
    ex = exchange()
    reader = reader_for(ex, "application/json", None)
    reader.feed(fixture("deepseek-chat-nonstream.json"), 1.0)
    reader.close(2.0)
    assert ex.response_id and ex.finish_reasons == ("stop",)


def test_without_finish_reasons_asked_for_the_fast_path_skips_a_bare_finish_event() -> None:
    """OpenAI sends the finish reason in an event of its own: found only when asked for."""
    assert feed_events("openai-stream-include-usage.sse").finish_reasons == ()
    assert feed_events("deepseek-chat-stream.sse").finish_reasons == ("stop",)  # with usage
