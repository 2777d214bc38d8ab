"""Deterministic token counting and text generation.

The simulator has no tokenizer: a token is ``chars_per_token`` characters of the prompt text
(rounded up). That keeps counts stable across runs and makes cache prefixes line up with text
prefixes, which is all the sidecar's metrics need.
"""

from __future__ import annotations

import random
from typing import Any

_WORDS = (
    "the", "cache", "token", "stream", "model", "latency", "queue", "answer", "reason", "step",
    "value", "prompt", "signal", "metric", "budget", "window", "server", "client", "result",
    "check", "first", "next", "then", "so", "we", "it", "is", "a", "of", "to", "and", "in",
)  # fmt: skip


def _content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def prompt_text(body: dict[str, Any]) -> str:
    """Concatenate what the model would read: system, messages (role + content), FIM parts."""
    pieces: list[str] = []
    system = body.get("system")
    if system is not None:
        pieces.append("system\n" + _content_text(system))
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in messages:
            if isinstance(msg, dict):
                pieces.append(f"{msg.get('role', '')}\n{_content_text(msg.get('content'))}")
    for key in ("prompt", "suffix"):
        value = body.get(key)
        if isinstance(value, str):
            pieces.append(value)
    return "\n".join(pieces)


def count_tokens(text: str, chars_per_token: int) -> int:
    """Tokens in ``text``: characters / chars_per_token rounded up, at least 1."""
    return max(1, -(-len(text) // chars_per_token))


def generate_pieces(rng: random.Random, count: int, leading_space: bool = True) -> list[str]:
    """``count`` text pieces, one per token, drawn from a small vocabulary."""
    pieces = []
    for i in range(count):
        word = rng.choice(_WORDS)
        pieces.append(word if i == 0 and not leading_space else " " + word)
    return pieces
