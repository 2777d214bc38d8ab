"""An incremental WebSocket frame reader (RFC 6455 §5, RFC 7692), for observation only.

The tunnel relays a session's raw bytes untouched; this reads a copy of one direction, fed in
any split, and yields whole messages (fragments reassembled, permessage-deflate undone) and
control frames. It keeps only what observation needs: text up to a cap (or just a prefix),
compressed messages in full (the deflate context needs every byte), binary never. A message
past its cap is dropped with the parse error ``oversize`` and the frames after it are still
read; bytes that are not WebSocket framing stop the reader for good (``websocket``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from sidecar.observe.deflate import Inflater

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
# Realtime events are JSON text; response.done carries every output item except audio, a few
# KiB to a few hundred. 1 MiB per direction bounds the memory a session can hold for us.
MAX_MESSAGE = 1 << 20
_SKIP, _KEEP, _PREFIX = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Message:
    """A whole message or a control frame; ``partial`` when only a prefix was kept."""

    opcode: int
    data: bytes
    partial: bool = False


def unmask(data: bytes, key: bytes, offset: int) -> bytes:
    """XOR ``data`` (which starts ``offset`` bytes into a frame's payload) with the mask key.

    One big-integer XOR: linear and in C, with no Python loop over the bytes.
    """
    size = len(data)
    shift = offset & 3
    pad = ((key[shift:] + key[:shift]) * ((size >> 2) + 1))[:size]
    mixed = int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")
    return mixed.to_bytes(size, "little")


def _head_size(second: int) -> int:
    """Header bytes implied by a frame's second byte: 2, plus the extended length, plus a mask."""
    length = second & 0x7F
    return 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if second & 0x80 else 0)


class FrameReader:
    """One direction of a session. ``text_prefix`` set: keep only that much of each text."""

    def __init__(
        self,
        *,
        cap: int = MAX_MESSAGE,
        text_prefix: int | None = None,
        deflate: bool = False,
        no_context_takeover: bool = False,
    ) -> None:
        self.cap = cap
        self.text_prefix = text_prefix
        self.deflate = deflate
        self.inflater = Inflater(no_context_takeover) if deflate else None
        self.error: str | None = None  # the first observation failure, as a parse_error kind
        self.broken = False
        self._head = bytearray()
        self._remaining = -1  # payload bytes left in the current frame; -1 while reading a head
        self._opcode = 0
        self._fin = False
        self._key: bytes | None = None
        self._offset = 0  # payload bytes of the current frame seen so far (mask alignment)
        self._control = bytearray()
        self._message = 0  # opcode of the message in progress, 0 when none
        self._compressed = False
        self._mode = _SKIP
        self._deliver = False
        self._partial = False
        self._parts: list[bytes] = []
        self._kept = 0

    def feed(self, chunk: bytes) -> list[Message]:
        """Read ``chunk``; return the messages and control frames it completed."""
        out: list[Message] = []
        pos, end = 0, len(chunk)
        while pos < end and not self.broken:
            if self._remaining < 0:
                if not self._head and not self._message:
                    whole = self._whole(chunk, pos, end, out)
                    if whole:
                        pos = whole
                        continue
                pos = self._read_head(chunk, pos, end, out)
                continue
            take = min(self._remaining, end - pos)
            if self._opcode >= CLOSE or self._mode != _SKIP:
                self._payload(chunk[pos : pos + take])
            pos += take
            self._remaining -= take
            self._offset += take
            if not self._remaining:
                self._frame_end(out)
        return out

    def _whole(self, chunk: bytes, pos: int, end: int, out: list[Message]) -> int:
        """The common case in one step: an unfragmented, uncompressed text or binary message
        of under 64 KiB, whole in this chunk. Returns where it ends, or 0 to take the long way.
        """
        if end - pos < 2 or chunk[pos] not in (0x81, 0x82):  # FIN, no RSV, text or binary
            return 0
        second = chunk[pos + 1]
        length, at = second & 0x7F, pos + 2
        if length == 127:
            return 0
        if length == 126:
            if end - pos < 4:
                return 0
            length, at = (chunk[pos + 2] << 8) | chunk[pos + 3], pos + 4
        key = chunk[at : at + 4] if second & 0x80 else None
        start = at + 4 if key is not None else at
        stop = start + length
        if stop > end:
            return 0
        if chunk[pos] == 0x81:
            keep = length if self.text_prefix is None else min(length, self.text_prefix)
            if keep > self.cap:
                self._fail("oversize")
                return stop
            data = chunk[start : start + keep]
            out.append(Message(TEXT, data if key is None else unmask(data, key, 0), keep < length))
        return stop

    def _fail(self, kind: str) -> None:
        if self.error is None:
            self.error = kind

    def _read_head(self, chunk: bytes, pos: int, end: int, out: list[Message]) -> int:
        head = self._head
        if not head and end - pos >= 2:  # the common case: the whole head is in this chunk
            size = _head_size(chunk[pos + 1])
            if end - pos >= size:
                self._start(chunk[pos : pos + size], out)
                return pos + size
        while pos < end:
            size = 2 if len(head) < 2 else _head_size(head[1])
            if len(head) == size:
                break
            grab = min(size - len(head), end - pos)
            head += chunk[pos : pos + grab]
            pos += grab
        if len(head) >= 2 and len(head) == _head_size(head[1]):
            self._start(bytes(head), out)
            head.clear()
        return pos

    def _start(self, head: bytes, out: list[Message]) -> None:
        first, second = head[0], head[1]
        fin, rsv, opcode = bool(first & 0x80), first & 0x70, first & 0x0F
        length, at = second & 0x7F, 2
        if length == 126:
            length, at = int.from_bytes(head[2:4], "big"), 4
        elif length == 127:
            length, at = int.from_bytes(head[2:10], "big"), 10
        if not self._valid(fin, rsv, opcode, length):
            self.broken = True
            self._fail("websocket")
            return
        if opcode in (TEXT, BINARY):
            self._begin(opcode, bool(rsv))
        self._opcode, self._fin, self._offset, self._remaining = opcode, fin, 0, length
        self._key = head[at : at + 4] if second & 0x80 else None
        if not length:
            self._frame_end(out)

    def _valid(self, fin: bool, rsv: int, opcode: int, length: int) -> bool:
        if length >> 63 or rsv & 0x30:  # RSV2/RSV3: an extension we cannot read
            return False
        if opcode >= CLOSE:
            return fin and not rsv and length <= 125 and opcode <= PONG
        if opcode == CONTINUATION:
            return bool(self._message) and not rsv
        return opcode in (TEXT, BINARY) and not self._message and (self.deflate or not rsv)

    def _begin(self, opcode: int, compressed: bool) -> None:
        self._message, self._compressed = opcode, compressed
        self._parts, self._kept, self._partial = [], 0, False
        if compressed:
            self._mode = _KEEP if self.inflater is not None else _SKIP  # else: context lost
        elif opcode == TEXT:
            self._mode = _PREFIX if self.text_prefix is not None else _KEEP
        else:
            self._mode = _SKIP
        self._deliver = self._mode != _SKIP

    def _payload(self, data: bytes) -> None:
        key = self._key
        if self._opcode >= CLOSE:
            self._control += data if key is None else unmask(data, key, self._offset)
            return
        limit = self.text_prefix if self._mode == _PREFIX else self.cap
        room = (limit or 0) - self._kept
        if len(data) > room:
            if self._mode != _PREFIX:
                self._drop("oversize")
                return
            data, self._mode, self._partial = data[:room], _SKIP, True
        self._parts.append(data if key is None else unmask(data, key, self._offset))
        self._kept += len(data)

    def _drop(self, kind: str) -> None:
        """Give up on the message in progress; compressed, it takes the deflate context along."""
        self._fail(kind)
        self._parts, self._mode, self._deliver = [], _SKIP, False
        if self._compressed and self.inflater is not None and not self.inflater.resets:
            self.inflater = None

    def _frame_end(self, out: list[Message]) -> None:
        self._remaining = -1
        if self._opcode >= CLOSE:
            out.append(Message(self._opcode, bytes(self._control)))
            self._control.clear()
            return
        if not self._fin:
            return
        if self._deliver:
            message = self._complete()
            if message is not None:
                out.append(message)
        self._message, self._parts, self._mode, self._deliver = 0, [], _SKIP, False

    def _complete(self) -> Message | None:
        data = b"".join(self._parts)
        if self._compressed and self.inflater is not None:
            try:
                data = self.inflater.message(data, self.cap)
            except OverflowError:
                self._drop("oversize")
                return None
            except zlib.error:
                self._drop("decompress")
                return None
        return Message(self._message, data, self._partial)
