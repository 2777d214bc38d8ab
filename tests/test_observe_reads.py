"""The stream reader's read-level shortcut decides exactly as decoding every event would.

``StreamReader.feed`` settles a read of one event on one line with a few scans and no decoding;
these reads are built to sit on its edges: a text field whose last occurrence is empty but an
earlier one is not, events split across reads, CR framing, comments quoting a text field, usage
and finish reasons in the middle of a read, undecodable JSON after the first event.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_observe import observed

FIRST = b'data: {"id":"c1","model":"m","choices":[{"delta":{"role":"assistant"}}]}\n\n'
PIECES = (
    b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n',
    b'data: {"choices":[{"delta":{"content":""}}]}\n\n',
    b'data: {"choices":[{"delta":{"content":"a"}},{"delta":{"content":""}}]}\n\n',
    b'data: {"choices":[{"delta":{"content":"","reasoning_content":"r"}}]}\n\n',
    b'data: {"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}\n\n',
    b'data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b'data: {"choices":[{"delta":{"content":"crlf"}}]}\r\n\r\n',
    b'data: {"choices":[{"delta":{"content":"cr"}}]}\r\r',
    b": keep-alive\n\n",
    b': {"content":"not a token"}\n\n',
    b'event: delta\ndata: {"choices":[{"delta":{"content":"named"}}]}\n\n',
    b'data: {"choices":\ndata: [{"delta":{"content":"two lines"}}]}\n\n',
    b"\n",
    b"\n\n",
    b"data: [DONE]\n\n",
    b'data: {"not json\n\n',
)


@settings(max_examples=400, deadline=None)
@given(
    picks=st.lists(st.sampled_from(PIECES), min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 600), max_size=6),
    finish=st.booleans(),
)
def test_a_read_is_observed_as_its_events_decoded_one_by_one(
    picks: list[bytes], cuts: list[int], finish: bool
) -> None:
    body = FIRST + b"".join(picks)
    bounds = sorted({0, len(FIRST), len(body), *(c for c in cuts if c < len(body))})
    for reads in ([FIRST, *picks], [body[a:b] for a, b in itertools.pairwise(bounds)]):
        fast = observed(reads, fast=True, finish_reasons=finish)
        assert fast == observed(reads, fast=False, finish_reasons=finish)


def test_an_empty_last_text_field_does_not_hide_an_earlier_token() -> None:
    read = b'data: {"choices":[{"delta":{"content":"a"}},{"delta":{"content":""}}]}\n\n'
    for fast in (True, False):
        first_token_at, last_token_at = observed([FIRST, read], fast=fast)[1:3]
        assert (first_token_at, last_token_at) == (2.0, 2.0)


def test_a_read_holding_only_an_empty_delta_is_not_a_token() -> None:
    reads = [FIRST, PIECES[0], PIECES[1]]
    for fast in (True, False):
        assert observed(reads, fast=fast)[1:3] == (2.0, 2.0)
