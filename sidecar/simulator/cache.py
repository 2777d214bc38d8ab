"""Prefix cache per API key, in whole units, like DeepSeek's context caching.

A request stores the digests of every unit-aligned prefix of its prompt; the hit count of a later
request is its longest stored unit-aligned prefix. Hits are therefore multiples of ``unit`` and
never exceed the prompt, so ``hit + miss == prompt_tokens`` always holds.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict


class PrefixCache:
    """Bounded map of (key, prefix digest); the oldest prefixes go first when full."""

    def __init__(self, unit: int, chars_per_token: int, max_prefixes: int) -> None:
        self._unit = unit
        self._chars_per_token = chars_per_token
        self._max = max_prefixes
        self._seen: OrderedDict[tuple[str, bytes], None] = OrderedDict()

    def _digests(self, text: str) -> list[bytes]:
        """Digest of each whole-unit prefix of ``text``, shortest first."""
        step = self._unit * self._chars_per_token
        hasher = hashlib.blake2b(digest_size=16)
        digests = []
        for end in range(step, len(text) + 1, step):
            hasher.update(text[end - step : end].encode("utf-8", "surrogatepass"))
            digests.append(hasher.copy().digest())
        return digests

    def lookup_and_store(self, api_key: str, text: str, prompt_tokens: int) -> int:
        """Return cached tokens for this prompt, then remember its prefixes for later requests."""
        digests = self._digests(text)
        hit_units = 0
        for i, digest in enumerate(digests):
            if (api_key, digest) not in self._seen:
                break
            hit_units = i + 1
        for digest in digests:
            self._seen[(api_key, digest)] = None
            self._seen.move_to_end((api_key, digest))
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return min(hit_units * self._unit, prompt_tokens)
