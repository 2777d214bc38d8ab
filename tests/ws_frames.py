"""WebSocket frames built by hand (RFC 6455 §5.2, RFC 7692), for byte-level tests."""

from __future__ import annotations

import base64
import hashlib
import zlib

from sidecar.observe.websocket import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, unmask

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "PING",
    "PONG",
    "TEXT",
    "Deflater",
    "accept_for",
    "close_payload",
    "frame",
]


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    mask: bytes | None = None,
    rsv1: bool = False,
) -> bytes:
    """One frame; ``mask`` (4 bytes) makes it a client frame."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    size = len(payload)
    bit = 0x80 if mask is not None else 0
    if size < 126:
        head = bytes([first, bit | size])
    elif size < 1 << 16:
        head = bytes([first, bit | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([first, bit | 127]) + size.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + unmask(payload, mask, 0)  # XOR is its own inverse


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


def accept_for(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


class Deflater:
    """permessage-deflate sender: one deflate stream, context kept unless told otherwise."""

    def __init__(self, no_context_takeover: bool = False) -> None:
        self.reset = no_context_takeover
        self._obj = zlib.compressobj(wbits=-zlib.MAX_WBITS)

    def message(self, data: bytes) -> bytes:
        if self.reset:
            self._obj = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        out = self._obj.compress(data) + self._obj.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]
