"""The frame reader: any split of a stream reads as the whole, every buffer is capped."""

from __future__ import annotations

import itertools
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.observe.deflate import negotiated_deflate
from sidecar.observe.websocket import FrameReader, Message, unmask
from tests.ws_frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Deflater,
    close_payload,
    frame,
)

MASK = b"\x01\x80\xfe\x7f"


def read(reader: FrameReader, data: bytes, cuts: list[int] | None = None) -> list[Message]:
    """Feed ``data`` cut at ``cuts`` (offsets), collecting every message."""
    out: list[Message] = []
    edges = [0, *sorted(set(cuts or [])), len(data)]
    for start, end in itertools.pairwise(edges):
        out += reader.feed(data[start:end])
    return out


def test_lengths_of_every_encoding_and_masks() -> None:
    for size in (0, 1, 125, 126, 127, 65535, 65536, 200_000):
        payload = os.urandom(size)
        for mask in (None, MASK):
            (message,) = FrameReader(cap=1 << 20).feed(frame(TEXT, payload, mask=mask))
            assert message == Message(TEXT, payload), (size, mask)


def test_fragments_are_reassembled_around_control_frames() -> None:
    data = (
        frame(TEXT, b'{"type":', fin=False, mask=MASK)
        + frame(PING, b"hi", mask=MASK)
        + frame(CONTINUATION, b'"response', fin=False, mask=MASK)
        + frame(CONTINUATION, b'.create"}', mask=MASK)
        + frame(CLOSE, close_payload(1000, b"done"), mask=MASK)
    )
    assert FrameReader().feed(data) == [
        Message(PING, b"hi"),
        Message(TEXT, b'{"type":"response.create"}'),
        Message(CLOSE, close_payload(1000, b"done")),
    ]


def test_binary_messages_are_skipped_not_kept() -> None:
    reader = FrameReader(cap=16)
    data = frame(BINARY, os.urandom(100_000)) + frame(PONG, b"") + frame(TEXT, b"ok")
    assert reader.feed(data) == [Message(PONG, b""), Message(TEXT, b"ok")]
    assert reader.error is None


def test_an_oversize_message_is_dropped_and_the_next_one_read() -> None:
    reader = FrameReader(cap=10)
    data = frame(TEXT, b"x" * 6, fin=False) + frame(CONTINUATION, b"y" * 6) + frame(TEXT, b"small")
    assert reader.feed(data) == [Message(TEXT, b"small")]
    assert reader.error == "oversize"


def test_a_client_prefix_is_all_that_is_unmasked_and_kept() -> None:
    reader = FrameReader(text_prefix=8)
    data = frame(TEXT, b"0123", fin=False, mask=MASK) + frame(CONTINUATION, b"456789", mask=MASK)
    assert reader.feed(data) == [Message(TEXT, b"01234567", partial=True)]
    assert reader.error is None


def test_deflate_with_context_takeover_and_without() -> None:
    texts = [b'{"type":"response.done","usage":{}}' * 3] * 4
    for reset in (False, True):
        deflater = Deflater(no_context_takeover=reset)
        data = b"".join(frame(TEXT, deflater.message(t), rsv1=True, mask=MASK) for t in texts)
        reader = FrameReader(deflate=True, no_context_takeover=reset)
        assert [m.data for m in reader.feed(data)] == texts
        assert reader.error is None


def test_an_oversize_compressed_message_loses_the_context_not_the_reader() -> None:
    deflater = Deflater()
    big = os.urandom(64)  # incompressible: the compressed form exceeds the cap
    data = frame(TEXT, deflater.message(big), rsv1=True) + frame(
        TEXT, deflater.message(b"a"), rsv1=True
    )
    reader = FrameReader(cap=32, deflate=True)
    assert reader.feed(data + frame(TEXT, b"plain")) == [Message(TEXT, b"plain")]
    assert reader.error == "oversize"


def test_garbage_compressed_data_is_a_decompress_error() -> None:
    reader = FrameReader(deflate=True, no_context_takeover=True)
    data = frame(TEXT, b"\xff\xff\xff\xff", rsv1=True) + frame(TEXT, b"next")
    assert reader.feed(data) == [Message(TEXT, b"next")]
    assert reader.error == "decompress"


def test_bytes_that_are_not_websocket_stop_the_reader() -> None:
    for bad in (
        bytes([0x80 | 0x20 | TEXT, 1]) + b"x",  # RSV2: an extension nobody negotiated
        frame(TEXT, b"x", rsv1=True),  # RSV1 without permessage-deflate
        frame(CONTINUATION, b"x"),  # a continuation with no message to continue
        frame(PING, b"x" * 126),  # control frames are at most 125 bytes
        bytes([0x83, 0]),  # opcode 3 is reserved
    ):
        reader = FrameReader()
        assert reader.feed(bad + frame(TEXT, b"after")) == []
        assert (reader.broken, reader.error) == (True, "websocket")


def test_negotiated_deflate_parameters() -> None:
    assert negotiated_deflate(None) is None
    assert negotiated_deflate("x-webkit-deflate-frame") is None
    deflate = negotiated_deflate(
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=12"
    )
    assert deflate is not None
    assert deflate.server_no_context_takeover and not deflate.client_no_context_takeover


messages = st.lists(
    st.tuples(
        st.sampled_from([TEXT, BINARY, PING, CLOSE]),
        st.binary(max_size=300),
        st.integers(min_value=1, max_value=3),  # fragments of a data message
        st.booleans(),  # compressed
    ),
    max_size=8,
)


def encode(plan: list[tuple[int, bytes, int, bool]], masked: bool) -> tuple[bytes, list[bytes]]:
    """Frames for ``plan`` (one deflate stream across messages) and the payloads expected."""
    deflater, data, expected = Deflater(), b"", []
    mask = MASK if masked else None
    for opcode, payload, parts, compressed in plan:
        if opcode >= CLOSE:
            body = payload[:125]
            data += frame(opcode, body, mask=mask)
            expected.append(body)
            continue
        wire = deflater.message(payload) if compressed else payload
        step = -(-len(wire) // parts) or 1
        pieces = [wire[i : i + step] for i in range(0, len(wire), step)] or [b""]
        for i, piece in enumerate(pieces):
            first = i == 0
            data += frame(
                opcode if first else CONTINUATION,
                piece,
                fin=i == len(pieces) - 1,
                mask=mask,
                rsv1=compressed and first,
            )
        if compressed or opcode == TEXT:
            expected.append(payload)
    return data, expected


@settings(max_examples=200, deadline=None)
@given(plan=messages, masked=st.booleans(), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_reads_as_the_whole(
    plan: list[tuple[int, bytes, int, bool]], masked: bool, cuts: list[int]
) -> None:
    data, expected = encode(plan, masked)
    whole = read(FrameReader(deflate=True), data)
    split = read(FrameReader(deflate=True), data, [c % (len(data) + 1) for c in cuts])
    assert split == whole
    assert [m.data for m in whole] == expected


@given(data=st.binary(max_size=64), offset=st.integers(min_value=0, max_value=7))
def test_unmasking_a_slice_at_any_offset(data: bytes, offset: int) -> None:
    masked = unmask(data, MASK, 0)
    assert unmask(masked[offset:], MASK, offset) == data[offset:]
