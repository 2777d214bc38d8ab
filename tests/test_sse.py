"""The SSE decoder: grammar cases, caps, and the split-invariance property."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.observe.sse import SSEDecoder, SSEEvent
from tests.fake_upstream import FIXTURES


def decode(*pieces: bytes, max_line: int = 1 << 20) -> tuple[list[SSEEvent], SSEDecoder]:
    decoder = SSEDecoder(max_line)
    events: list[SSEEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    events += decoder.close()
    return events, decoder


def test_lf_crlf_and_cr_line_endings_decode_alike() -> None:
    lf, _ = decode(b"data: a\n\ndata: b\n\n")
    crlf, _ = decode(b"data: a\r\n\r\ndata: b\r\n\r\n")
    cr, _ = decode(b"data: a\r\rdata: b\r\r")
    assert lf == crlf == cr == [(None, b"a"), (None, b"b")]


def test_crlf_split_between_pieces_is_one_line_end() -> None:
    events, _ = decode(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n")
    assert events == [(None, b"a"), (None, b"b")]


def test_comments_and_blank_lines_before_data_are_queue_signals() -> None:
    events, decoder = decode(b": keep-alive\n\n: keep-alive\n\n\ndata: x\n\n: late\n\n")
    assert events == [(None, b"x")]
    assert decoder.signals_before_data == 5  # two comments, three blank lines
    assert decoder.comments == 3


def test_multiline_data_event_names_and_optional_space() -> None:
    events, _ = decode(b'event: message_start\ndata:{"a":1}\ndata: two\nid: 7\n\n')
    assert events == [("message_start", b'{"a":1}\ntwo')]


def test_unterminated_event_at_eof_is_dropped() -> None:
    events, _ = decode(b"data: complete\n\ndata: partial")
    assert events == [(None, b"complete")]


def test_oversized_line_is_dropped_and_reported_then_decoding_resumes() -> None:
    events, decoder = decode(b"data: " + b"x" * 100, b"x" * 100 + b"\n\ndata: ok\n\n", max_line=64)
    assert events == [(None, b"ok")]
    assert decoder.overflowed >= 1


def test_fixture_streams_decode_to_their_data_lines() -> None:
    raw = (FIXTURES / "deepseek-chat-stream.sse").read_bytes()
    events, decoder = decode(raw)
    assert events[-1] == (None, b"[DONE]")
    assert len(events) == raw.count(b"\ndata: ") + raw.startswith(b"data: ")
    assert decoder.signals_before_data == 4  # two ": keep-alive" comments + their blank lines


STREAMS = [
    (FIXTURES / name).read_bytes()
    for name in (
        "deepseek-chat-stream.sse",
        "deepseek-reasoner-stream.sse",
        "anthropic-messages-stream.sse",
        "openai-stream-include-usage.sse",
    )
] + [b": ka\r\n\r\ndata: a\r\ndata: b\r\rdata: c\n\nevent: e\ndata: \xf0\x9f\x98\x8a\n\n"]


@settings(max_examples=300, deadline=None)
@given(
    stream=st.sampled_from(STREAMS),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=40),
)
def test_any_split_decodes_to_the_same_events(stream: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    whole_events, whole = decode(stream)
    split_events, split = decode(*pieces)
    assert split_events == whole_events
    assert (split.signals_before_data, split.comments) == (
        whole.signals_before_data,
        whole.comments,
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512), st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_never_crash_and_split_invariance_holds(data: bytes, step: int) -> None:
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    assert decode(*pieces)[0] == decode(data)[0]


class LineOnlyDecoder(SSEDecoder):
    """The reference: the line grammar alone, without the event fast path."""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._pending + chunk if self._pending else chunk
        return self._feed_lines(buf)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"data: x",
                b"data:y",
                b": ka",
                b"event: e",
                b"",
                b"id: 1",
                b'data: {"a":1}',
                b"\n",
                b"\r",
                b"\r\n",
                b"data: [DONE]",
                b"retry: 5",
                b"\xf0\x9f",
            ]
        ).map(lambda piece: piece + b"\n"),
        max_size=30,
    ),
    st.integers(min_value=1, max_value=40),
)
def test_fast_path_matches_the_line_grammar(lines: list[bytes], step: int) -> None:
    stream = b"".join(lines)
    pieces = [stream[i : i + step] for i in range(0, len(stream), step)]
    fast, reference = SSEDecoder(), LineOnlyDecoder()
    got = [event for piece in pieces for event in fast.feed(piece)] + fast.close()
    want = [event for piece in pieces for event in reference.feed(piece)] + reference.close()
    assert got == want
    assert (fast.signals_before_data, fast.comments) == (
        reference.signals_before_data,
        reference.comments,
    )
