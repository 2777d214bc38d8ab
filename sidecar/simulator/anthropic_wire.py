"""Anthropic Messages events and bodies, as DeepSeek's ``/anthropic`` endpoint sends them.

Grammar: message_start → (content_block_start, ping after the first, content_block_delta*,
content_block_stop)+ → message_delta (cumulative usage) → message_stop. Anthropic's
``input_tokens`` excludes cache reads, so here it is the cache-miss count.
"""

from __future__ import annotations

from typing import Any

import orjson


def event(obj: dict[str, Any]) -> bytes:
    """``event: <type>`` + ``data: <json>`` framed with LF."""
    return b"event: " + str(obj["type"]).encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def _usage(miss: int, hit: int, output: int, full: bool) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": miss,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": hit,
    }
    if full:
        usage["cache_creation"] = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
    usage["output_tokens"] = output
    if full:
        usage["service_tier"] = "standard"
    return usage


def _message(msg_id: str, model: str, content: list[Any], stop: str | None) -> dict[str, Any]:
    return {
        "model": model,
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
    }


def message_start(msg_id: str, model: str, miss: int, hit: int) -> bytes:
    message = _message(msg_id, model, [], None)
    message["usage"] = _usage(miss, hit, 1, full=True)
    return event({"type": "message_start", "message": message})


def block_start(index: int, kind: str) -> bytes:
    block = (
        {"type": "thinking", "thinking": ""} if kind == "thinking" else {"type": "text", "text": ""}
    )
    return event({"type": "content_block_start", "index": index, "content_block": block})


def ping() -> bytes:
    return event({"type": "ping"})


def block_delta(index: int, kind: str, piece: str) -> bytes:
    if kind == "thinking":
        delta = {"type": "thinking_delta", "thinking": piece}
    else:
        delta = {"type": "text_delta", "text": piece}
    return event({"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> bytes:
    return event({"type": "content_block_stop", "index": index})


def message_delta(stop: str, miss: int, hit: int, output: int) -> bytes:
    delta = {"stop_reason": stop, "stop_sequence": None}
    usage = _usage(miss, hit, output, full=False)
    return event({"type": "message_delta", "delta": delta, "usage": usage})


def message_stop() -> bytes:
    return event({"type": "message_stop"})


def message_body(
    msg_id: str, model: str, thinking: str | None, text: str, stop: str, usage: tuple[int, int, int]
) -> bytes:
    """Non-streaming Message; ``usage`` is (miss, hit, output)."""
    content: list[Any] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking})
    content.append({"type": "text", "text": text})
    message = _message(msg_id, model, content, stop)
    miss, hit, output = usage
    message["usage"] = _usage(miss, hit, output, full=True)
    return orjson.dumps(message)
