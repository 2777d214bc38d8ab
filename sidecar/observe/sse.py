"""Incremental Server-Sent Events decoder: bytes in, complete events out.

Follows the WHATWG event-stream grammar (lines end in LF, CRLF or CR; ``:`` starts a
comment; ``data`` lines of one event are joined with LF; a blank line dispatches), one
complete line at a time, so any split of a byte stream decodes to the same events. Pure:
no I/O, no clock. Lines longer than ``max_line`` are dropped (and reported) instead of
growing the buffer without bound.
"""

from __future__ import annotations

DEFAULT_MAX_LINE = 1 << 20  # a DeepSeek chunk is < 1 KiB; 1 MiB leaves room for huge tool calls


# (event name or None, data lines joined with LF). A plain tuple: it is built per chunk on
# the hot path, and a NamedTuple costs several times more to construct.
SSEEvent = tuple[str | None, bytes]


class SSEDecoder:
    """Decode a stream fed in arbitrary pieces.

    Besides events it tracks what a monitor needs about queueing: how many comments and
    blank lines came before the first ``data`` line (DeepSeek's ``: keep-alive``).
    """

    __slots__ = (
        "_data",
        "_event",
        "_max_line",
        "_pending",
        "_skipping",
        "comments",
        "data_seen",
        "overflowed",
        "signals_before_data",
    )

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._max_line = max_line
        self._pending = b""
        self._data: list[bytes] = []
        self._event: str | None = None
        self._skipping = False
        self.comments = 0
        self.signals_before_data = 0
        self.data_seen = False
        self.overflowed = 0

    def at_boundary(self) -> bool:
        """True between events: nothing pending, no event half-read, no line being skipped."""
        return not self._pending and not self._data and not self._skipping

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk``; return the events it completed, in order."""
        buf = self._pending + chunk if self._pending else chunk
        if self._data or self._skipping or b"\r" in buf:
            return self._feed_lines(buf)
        # Fast path for LF-framed streams at an event boundary (DeepSeek, OpenAI): whole
        # "data: ..." events without a per-line loop. Anything else in an event (comments,
        # names, multi-line data) goes through the line grammar, so the result is the same
        # as _feed_lines (a property test checks this).
        *parts, rest = buf.split(b"\n\n")
        events: list[SSEEvent] = []
        for part in parts:
            if part[:6] == b"data: " and b"\n" not in part:
                self.data_seen = True
                events.append((self._event, part[6:]))
                self._event = None
                continue
            for line in part.split(b"\n"):
                self._line(line, events)
            self._line(b"", events)
        self._pending = b""
        return events + self._feed_lines(rest) if rest else events

    def _feed_lines(self, buf: bytes) -> list[SSEEvent]:
        if b"\r" in buf:
            # A CR at the very end may be the first half of CRLF: keep it for the next piece.
            hold = buf.endswith(b"\r")
            body = buf[:-1] if hold else buf
            buf = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if hold else b"")
        *lines, rest = buf.split(b"\n")
        events: list[SSEEvent] = []
        for line in lines:
            if self._skipping:
                self._skipping = False  # the tail of an oversized line ends here
                continue
            self._line(line, events)
        if len(rest) > self._max_line:
            self.overflowed += 1
            self._skipping = True
            rest = b""
        self._pending = rest
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: an unterminated last line is processed, an unfinished event dropped.

        The spec discards an event that was not followed by a blank line; so do we.
        """
        events: list[SSEEvent] = []
        if self._pending and not self._skipping:
            self._line(self._pending.rstrip(b"\r"), events)
        self._pending = b""
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                events.append((self._event, b"\n".join(self._data)))
                self._data = []
            elif not self.data_seen:
                self.signals_before_data += 1
            self._event = None
            return
        if line[0] == 0x3A:  # ':' comment, e.g. ": keep-alive"
            self.comments += 1
            if not self.data_seen:
                self.signals_before_data += 1
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self.data_seen = True
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
