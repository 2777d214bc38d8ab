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
    """SSE responses: first data, first/last content token, model, usage (last one wins)."""

    kind = "sse"
    fast_path = True  # tests turn it off to compare with the event-by-event path

    def __init__(
        self, ex: Exchange, encoding: str | None, anthropic: bool, finish_reasons: bool = False
    ) -> None:
        super().__init__(ex, encoding)
        self._decoder = SSEDecoder()
        self._anthropic = anthropic
        self._parsed_first = False
        # Finish reasons ride on events without usage (OpenAI), so finding them costs one more
        # scan of every chunk (~0.3 µs): done only when something reads them (span export).
        self._finish_mark = _FINISH_MARK if finish_reasons else _USAGE_MARK
        self._finish: dict[int, str] = {}

    def feed(self, chunk: bytes, now: float) -> None:
        if not self.active:
            return
        if self._decompressor is not None:
            plain = self._plain(chunk)
            if plain is None:
                return
            chunk = plain
        if self._parsed_first and self.fast_path and self._only_tokens(chunk):
            # After the first event only tokens and usage matter: a chunk of whole events with
            # no usage and no comment needs no decoding, just one look for content.
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

    def _only_tokens(self, chunk: bytes) -> bool:
        """Whole events (the decoder between events before, and a blank line at the end puts
        it between events after, whatever the line endings), no comment (its text must not
        count as content), no usage (it must be parsed)."""
        return (
            chunk.endswith(b"\n\n")
            and self._decoder.at_boundary()
            and _USAGE_MARK not in chunk
            and (self._finish_mark is _USAGE_MARK or self._finish_mark not in chunk)
            and b"\n:" not in chunk
            and chunk[:1] != b":"
        )

    def close(self, now: float) -> None:
        if self.active:
            for event in self._decoder.close():
                self._event(event, now)

    def _event(self, event: SSEEvent, now: float) -> None:
        data = event[1]
        if carries_content(data):
            if self.ex.first_token_at is None:
                self.ex.first_token_at = now
            self.ex.last_token_at = now
        if self._parsed_first and _USAGE_MARK not in data and self._finish_mark not in data:
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
