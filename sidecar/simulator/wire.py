"""Bodies and chunks in DeepSeek's exact key order (and OpenAI's, for the ``openai`` flavour).

Dicts keep insertion order and orjson writes compact JSON in that order, so each builder below
*is* the wire layout; see tests/fixtures/*.sse and *.json for the captures they reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Usage:
    """Token counts of one response; the invariants hold by construction."""

    prompt: int
    hit: int
    completion: int
    reasoning: int | None  # None: not a thinking response, no completion_tokens_details

    @property
    def miss(self) -> int:
        return self.prompt - self.hit

    def to_wire(self, flavour: str) -> dict[str, Any]:
        """DeepSeek usage (cache fields last) or OpenAI usage (all details, zeros included)."""
        base: dict[str, Any] = {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        }
        if flavour == "openai":
            base["prompt_tokens_details"] = {"cached_tokens": self.hit, "audio_tokens": 0}
            base["completion_tokens_details"] = {
                "reasoning_tokens": self.reasoning or 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
            return base
        base["prompt_tokens_details"] = {"cached_tokens": self.hit}
        if self.reasoning is not None:
            base["completion_tokens_details"] = {"reasoning_tokens": self.reasoning}
        base["prompt_cache_hit_tokens"] = self.hit
        base["prompt_cache_miss_tokens"] = self.miss
        return base


@dataclass(frozen=True)
class Head:
    """Fields shared by every chunk of one response."""

    id: str
    created: int
    model: str
    fingerprint: str
    flavour: str
    obfuscation: str = "x"


def sse(obj: dict[str, Any]) -> bytes:
    """One ``data:`` event, LF framed."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def error_body(message: str, type_: str, code: str = "invalid_request_error") -> bytes:
    """DeepSeek's OpenAI-style error envelope (``code`` is invalid_request_error even for 401)."""
    error = {"message": message, "type": type_, "param": None, "code": code}
    return orjson.dumps({"error": error})


def chat_chunk(head: Head, delta: dict[str, Any], finish: str | None, usage: Any = ...) -> bytes:
    """A ``chat.completion.chunk``; ``usage`` omitted when left as ``...``."""
    obj: dict[str, Any] = {
        "id": head.id,
        "object": "chat.completion.chunk",
        "created": head.created,
    }
    obj["model"] = head.model
    if head.flavour == "openai":
        obj["service_tier"] = "default"
    obj["system_fingerprint"] = head.fingerprint
    choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    obj["choices"] = choices
    if usage is not ...:
        obj["usage"] = usage
    if head.flavour == "openai":
        obj["obfuscation"] = head.obfuscation
    return sse(obj)


def usage_only_chunk(head: Head, usage: dict[str, Any]) -> bytes:
    """OpenAI's trailing ``choices: []`` chunk carrying the usage."""
    obj: dict[str, Any] = {
        "id": head.id,
        "object": "chat.completion.chunk",
        "created": head.created,
    }
    obj["model"] = head.model
    obj["service_tier"] = "default"
    obj["system_fingerprint"] = head.fingerprint
    obj["choices"] = []
    obj["usage"] = usage
    obj["obfuscation"] = head.obfuscation
    return sse(obj)


def first_delta(flavour: str, thinking: bool) -> dict[str, Any]:
    if flavour == "openai":
        return {"role": "assistant", "content": "", "refusal": None}
    if thinking:
        return {"role": "assistant", "content": None, "reasoning_content": ""}
    return {"role": "assistant", "content": ""}


def reasoning_delta(piece: str) -> dict[str, Any]:
    return {"content": None, "reasoning_content": piece}


def content_delta(flavour: str, thinking: bool, piece: str) -> dict[str, Any]:
    if thinking and flavour != "openai":
        return {"content": piece, "reasoning_content": None}
    return {"content": piece}


def finish_delta(flavour: str, thinking: bool) -> dict[str, Any]:
    if flavour == "openai":
        return {}
    if thinking:
        return {"content": "", "reasoning_content": None}
    return {"content": ""}


def chat_body(head: Head, content: str, reasoning: str | None, finish: str, usage: Usage) -> bytes:
    """A non-streaming ``chat.completion``."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if head.flavour == "openai":
        message["refusal"] = None
        message["annotations"] = []
    elif reasoning is not None:
        message["reasoning_content"] = reasoning
    obj: dict[str, Any] = {"id": head.id, "object": "chat.completion", "created": head.created}
    obj["model"] = head.model
    obj["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]
    obj["usage"] = usage.to_wire(head.flavour)
    if head.flavour == "openai":
        obj["service_tier"] = "default"
    obj["system_fingerprint"] = head.fingerprint
    return orjson.dumps(obj)


def fim_chunk(head: Head, text: str, finish: str | None, usage: Any = ...) -> bytes:
    """A streamed FIM ``text_completion`` chunk (``choices[].text``)."""
    obj: dict[str, Any] = {"id": head.id, "object": "text_completion", "created": head.created}
    obj["model"] = head.model
    obj["system_fingerprint"] = head.fingerprint
    obj["choices"] = [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]
    if usage is not ...:
        obj["usage"] = usage
    return sse(obj)


def fim_body(head: Head, text: str, finish: str, usage: Usage) -> bytes:
    """A non-streaming FIM ``text_completion``."""
    obj: dict[str, Any] = {"id": head.id, "object": "text_completion", "created": head.created}
    obj["model"] = head.model
    obj["choices"] = [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]
    obj["usage"] = usage.to_wire(head.flavour)
    obj["system_fingerprint"] = head.fingerprint
    return orjson.dumps(obj)


def models_body(models: tuple[str, ...]) -> bytes:
    data = [{"id": m, "object": "model", "owned_by": "deepseek"} for m in models]
    return orjson.dumps({"object": "list", "data": data})


def balance_body(available: bool, total: float, granted: float, topped_up: float) -> bytes:
    """``/user/balance``: amounts are strings with two decimals, as DeepSeek sends them."""
    info = {
        "currency": "USD",
        "total_balance": f"{total:.2f}",
        "granted_balance": f"{granted:.2f}",
        "topped_up_balance": f"{topped_up:.2f}",
    }
    return orjson.dumps({"is_available": available, "balance_infos": [info]})
