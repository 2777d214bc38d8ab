"""Readers that turn relayed response bytes into facts on the ``Exchange``.

Readers are synchronous and see bytes only after they were written to the client, so they
never delay a byte. Every buffer is capped; past a cap, or on undecodable input, a reader
records one ``parse_error`` kind and stops observing while the relay goes on.
"""

from __future__ import annotations

import re
import zlib
from typing import Protocol

import orjson

from sidecar.exchange import Exchange
from sidecar.observe.content_coding import Decompressor
from sidecar.observe.sse import SSEDecoder, SSEEvent
from sidecar.observe.usage import (
    find_finish_reasons,
    find_model,
    find_response_id,
    find_usage,
    from_anthropic,
    from_openai,
    merge_max,
)

MAX_JSON_BODY = 16 << 20  # a 384K-token answer is ~1.5 MiB of JSON; 16 MiB is ample headroom
WHITESPACE = b" \t\r\n"
CONCURRENCY_429 = re.compile(
    rb"current concurrency is (\d+), which exceeds your concurrency limit of (\d+)"
)

# Byte markers of events that carry generated content. Searching bytes keeps the per-chunk
# cost near a memory copy; JSON is parsed only for the first event and for usage carriers.
_TEXT_FIELDS = (b'"content":"', b'"reasoning_content":"', b'"text":"', b'"reasoning":"')
_CONTENT_TYPES = (
    b'"tool_calls":[',
    b'"type":"content_block_delta"',
    b'"type":"response.output_text.delta"',
    b'"type":"response.reasoning_text.delta"',
    b'"type":"response.reasoning_summary_text.delta"',
    b'"type":"response.function_call_arguments.delta"',
)
_USAGE_MARK = b'"usage":{'
# A finish reason that is set (``"finish_reason":"stop"``, Anthropic ``"stop_reason":"end_turn"``);
# the ``null`` every OpenAI chunk carries does not match, so those chunks keep the fast path.
_FINISH_MARK = b'_reason":"'


def carries_content(data: bytes) -> bool:
    """True when an event (or a run of events) carries generated tokens: a text field that is
    not empty, or a content-bearing event type; role-only deltas and keep-alives do not."""
    for marker in _TEXT_FIELDS:
        at = data.find(marker)
        while at >= 0:
            end = at + len(marker)
            if data[end : end + 1] != b'"':
                return True
            at = data.find(marker, end)
    return any(marker in data for marker in _CONTENT_TYPES)


class Reader(Protocol):
    def feed(self, chunk: bytes, now: float) -> None: ...

    def close(self, now: float) -> None: ...


class _Base:
    kind = "json"  # the parse_error kind counted when this reader fails

    def __init__(self, ex: Exchange, encoding: str | None) -> None:
        self.ex = ex
        self.active = True
        self._decompressor: Decompressor | None = None
        if encoding and encoding != "identity":
            try:
                self._decompressor = Decompressor(encoding)
            except ValueError:
                self._give_up("decompress")

    def _give_up(self, kind: str) -> None:
        if self.ex.parse_error is None:
            self.ex.parse_error = kind
        self.active = False

    def _plain(self, chunk: bytes) -> bytes | None:
        if self._decompressor is None:
            return chunk
        try:
            return self._decompressor.decompress(chunk, MAX_JSON_BODY)
        except OverflowError:
            self._give_up("oversize")
        except zlib.error:
            self._give_up("decompress")
        return None


class StreamReader(_Base):
    """SSE responses: first data, first/last content token, model, usage (last one wins).

    After the first event only tokens, usage and finish reasons matter, so a read of whole
    events without usage or comments skips the decoder: ``feed`` answers it with a few C-level
    scans (``bytes.find``/``rfind``) and no allocation. Whether the decoder sits between events
    changes only when it is fed, so it is worked out once per decoded read (``_fast``), not per
    event. Invariant (property-tested): the facts are those of decoding every event.

    ``rfind`` rather than ``in``: on JSON text CPython's reverse search is about twice as fast
    as its forward one for these markers (0.085 vs 0.19 µs for ``"usage":{`` over a 290-byte
    DeepSeek event, Python 3.11), and usage and content sit near an event's end.
    """

    kind = "sse"

    def __init__(
        self, ex: Exchange, encoding: str | None, anthropic: bool, finish_reasons: bool = False
    ) -> None:
        super().__init__(ex, encoding)
        self._decoder = SSEDecoder()
        self._anthropic = anthropic
        self._parsed_first = False
        # Finish reasons ride on events without usage (OpenAI), so finding them costs one more
        # scan of every chunk (~0.08 µs): done only when something reads them (span export).
        self._finish_mark = _FINISH_MARK if finish_reasons else _USAGE_MARK
        self._finish: dict[int, str] = {}
        self._fast_path = True
        # True when the next read may skip the decoder: observing, first event parsed, decoder
        # between events, no decompression (a compressed read is checked after decoding).
        self._fast = False

    @property
    def fast_path(self) -> bool:
        """Tests turn it off to compare with the event-by-event path."""
        return self._fast_path

    @fast_path.setter
    def fast_path(self, on: bool) -> None:
        self._fast_path = on
        self._refresh()

    def _refresh(self) -> None:
        self._fast = (
            self.active
            and self._parsed_first
            and self._fast_path
            and self._decompressor is None
            and self._decoder.at_boundary()
        )

    def _give_up(self, kind: str) -> None:
        super()._give_up(kind)
        self._fast = False

    def feed(self, chunk: bytes, now: float) -> None:
        if self._fast:
            # The usual read: exactly one event on one line (its only LFs are the last two), so
            # no comment can hide past its first byte; then no usage and no finish reason.
            nl = chunk.find(b"\n")
            if (
                (
                    (nl > 0 and nl == len(chunk) - 2 and chunk[-1] == 10 and chunk[0] != 58)
                    or self._whole_events(chunk)
                )
                and chunk.rfind(_USAGE_MARK) < 0
                and (self._finish_mark is _USAGE_MARK or chunk.rfind(self._finish_mark) < 0)
            ):
                # The last text field of a one-event read settles it when it is not empty; any
                # other case (empty delta, tool calls, several events) takes the full look.
                at = chunk.rfind(b'"content":"')
                # at + 11 < len(chunk): the marker ends in '"' and the read in LF LF.
                if (at >= 0 and chunk[at + 11] != 34) or carries_content(chunk):
                    ex = self.ex
                    if ex.first_token_at is None:
                        ex.first_token_at = now
                    ex.last_token_at = now
                return
        self._decode(chunk, now)

    def _whole_events(self, chunk: bytes) -> bool:
        """Several events: they end in a blank line, which (the decoder being between events
        before the read) leaves it between events after, whatever the line endings; and no
        comment, whose text must not count as content."""
        return chunk.endswith(b"\n\n") and chunk.rfind(b"\n:") < 0 and chunk[0] != 58

    def _only_tokens(self, chunk: bytes) -> bool:
        """``feed``'s test, for a decompressed read: whole events, no usage, no finish reason."""
        return (
            self._parsed_first
            and self._fast_path
            and self._decoder.at_boundary()
            and self._whole_events(chunk)
            and chunk.rfind(_USAGE_MARK) < 0
            and (self._finish_mark is _USAGE_MARK or chunk.rfind(self._finish_mark) < 0)
        )

    def _decode(self, chunk: bytes, now: float) -> None:
        """Every read ``feed`` cannot settle on its own: decompress, then decode its events."""
        if not self.active:
            return
        if self._decompressor is not None:
            plain = self._plain(chunk)
            if plain is None:
                return
            chunk = plain
            if self._only_tokens(chunk):
                if carries_content(chunk):
                    if self.ex.first_token_at is None:
                        self.ex.first_token_at = now
                    self.ex.last_token_at = now
                return
        events = self._decoder.feed(chunk)
        if self.ex.first_data_at is None and self._decoder.data_seen:
            self.ex.first_data_at = now
            self.ex.saw_queue_signal = self._decoder.signals_before_data > 0
        for event in events:
            self._event(event, now)
        if self._decoder.overflowed:
            self._give_up("oversize")
        self._refresh()

    def close(self, now: float) -> None:
        if self.active:
            for event in self._decoder.close():
                self._event(event, now)
        self._refresh()

    def _event(self, event: SSEEvent, now: float) -> None:
        data = event[1]
        if carries_content(data):
            if self.ex.first_token_at is None:
                self.ex.first_token_at = now
            self.ex.last_token_at = now
        if (
            self._parsed_first
            and data.rfind(_USAGE_MARK) < 0
            and (self._finish_mark is _USAGE_MARK or data.rfind(self._finish_mark) < 0)
        ):
            return
        if data == b"[DONE]":
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._give_up("sse")
            return
        if not self._parsed_first:
            self.ex.response_id = find_response_id(obj)
        self._parsed_first = True
        self.ex.reported_model = find_model(obj) or self.ex.reported_model
        reasons = find_finish_reasons(obj)
        if reasons:
            self._finish.update(reasons)
            self.ex.finish_reasons = tuple(self._finish[i] for i in sorted(self._finish))
        found = find_usage(obj)
        if found is not None:
            raw, anthropic = found
            if anthropic or self._anthropic:
                self.ex.usage = merge_max(self.ex.usage, from_anthropic(raw))
            else:
                self.ex.usage = from_openai(raw)  # cumulative: the last one counts


class JsonReader(_Base):
    """JSON bodies: queue signal from leading blank lines, then model, usage, 429 limit."""

    def __init__(self, ex: Exchange, encoding: str | None) -> None:
        super().__init__(ex, encoding)
        self._body = bytearray()
        self._blank_seen = False

    def feed(self, chunk: bytes, now: float) -> None:
        if not self.active:
            return
        plain = self._plain(chunk)
        if plain is None:
            return
        if self.ex.first_data_at is None:
            stripped = plain.lstrip(WHITESPACE)
            self._blank_seen = self._blank_seen or len(stripped) < len(plain)
            if not stripped:
                return
            self.ex.first_data_at = now
            self.ex.saw_queue_signal = self._blank_seen
            plain = stripped
        if len(self._body) + len(plain) > MAX_JSON_BODY:
            self._body.clear()
            self._give_up("oversize")
            return
        self._body += plain

    def close(self, now: float) -> None:
        if not self.active or not self._body:
            return
        try:
            obj = orjson.loads(self._body)
        except orjson.JSONDecodeError:
            self._give_up("json")
            return
        self.ex.reported_model = find_model(obj) or self.ex.reported_model
        self.ex.response_id = find_response_id(obj)
        reasons = find_finish_reasons(obj)
        self.ex.finish_reasons = tuple(reasons[i] for i in sorted(reasons))
        found = find_usage(obj)
        if found is not None:
            raw, anthropic = found
            self.ex.usage = from_anthropic(raw) if anthropic else from_openai(raw)
        if self.ex.status == 429:
            match = CONCURRENCY_429.search(self._body)
            if match:
                self.ex.limits.reported_concurrency_limit = int(match.group(2))


class NullReader:
    """Bodies we do not interpret (binary, HTML): relayed, not observed."""

    def feed(self, chunk: bytes, now: float) -> None:
        return None

    def close(self, now: float) -> None:
        return None


def observation_failed(ex: Exchange, reader: Reader, exc: Exception) -> None:
    """A reader raised: stop observing this exchange and say so; the relay goes on.

    The proxy calls readers inside ``try`` (free in CPython 3.11 when nothing is raised)
    rather than through a wrapper, which would cost a call per chunk.
    """
    ex.observer_error = type(exc).__name__
    if ex.parse_error is None:
        ex.parse_error = getattr(reader, "kind", "json")


def reader_for(
    ex: Exchange, content_type: str, encoding: str | None, *, finish_reasons: bool = False
) -> Reader:
    """Pick the reader by media type; the encoding is decoded on a copy only.

    ``finish_reasons``: also find a stream's finish reasons where no usage comes with them (JSON
    bodies and usage-carrying events always yield them).
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "text/event-stream":
        anthropic = ex.route == "anthropic_messages"
        return StreamReader(ex, encoding, anthropic, finish_reasons)
    if media.endswith("json"):
        return JsonReader(ex, encoding)
    return NullReader()
