"""Content-Encoding for observation: readers decode a copy; the relayed bytes stay compressed.

DeepSeek gzips non-streaming JSON (leading blank lines included), so usage and the queue signal
are only visible after decoding. The output of each call is capped: a body that inflates past
the cap is not observed (``OverflowError``), never buffered.
"""

from __future__ import annotations

import zlib


class Decompressor:
    """Decode a copy of ``Content-Encoding`` bytes for observation only (gzip, deflate)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding == "gzip":
            self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._obj = zlib.decompressobj(zlib.MAX_WBITS)
        else:
            raise ValueError(encoding)
        self._raw_fallback = encoding == "deflate"

    def decompress(self, chunk: bytes, limit: int) -> bytes:
        try:
            out = self._obj.decompress(chunk, limit)
        except zlib.error:
            if not self._raw_fallback:
                raise
            # Some servers send raw deflate despite RFC 9110; retry once without the header.
            self._raw_fallback = False
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._obj.decompress(chunk, limit)
        self._raw_fallback = False
        if self._obj.unconsumed_tail:
            raise OverflowError("decompressed data exceeds the observation cap")
        return out
