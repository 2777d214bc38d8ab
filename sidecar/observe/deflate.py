"""permessage-deflate (RFC 7692) for observation: what was negotiated, and one decoder per
direction.

The relay never decompresses; the frame reader inflates a copy of each compressed message to
read it. With context takeover (the default) each message may refer to the ones before, so
every compressed message of a direction must pass through the same decoder, in order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

_DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.2: removed by the sender, put back here


@dataclass(frozen=True, slots=True)
class Deflate:
    """permessage-deflate as the server accepted it in ``Sec-WebSocket-Extensions``."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False


def negotiated_deflate(header: str | None) -> Deflate | None:
    """The accepted permessage-deflate parameters, or None when it was not negotiated."""
    for extension in (header or "").split(","):
        name, *params = (part.strip().lower() for part in extension.split(";"))
        if name == "permessage-deflate":
            keys = {param.split("=", 1)[0].strip() for param in params}
            return Deflate(
                "server_no_context_takeover" in keys, "client_no_context_takeover" in keys
            )
    return None


class Inflater:
    """One direction's deflate decoder; its window carries over unless no_context_takeover."""

    def __init__(self, no_context_takeover: bool) -> None:
        self.resets = no_context_takeover
        self._obj = zlib.decompressobj(-zlib.MAX_WBITS)

    def message(self, data: bytes, limit: int) -> bytes:
        """Decompress one message; OverflowError past ``limit``, zlib.error on bad input."""
        if self.resets or self._obj.eof:
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        out = self._obj.decompress(data + _DEFLATE_TAIL, limit)
        if self._obj.unconsumed_tail:
            raise OverflowError("decompressed message exceeds the observation cap")
        return out
