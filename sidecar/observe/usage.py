"""Token usage from the three wire dialects, mapped onto one billed ``Usage``.

Definitions (CONTRACT "Precise definitions"): ``input`` is prompt tokens as billed (OpenAI
and DeepSeek ``prompt_tokens`` include cached tokens; Anthropic's ``input_tokens`` exclude
cache reads and writes, so those are added); ``output`` includes reasoning; ``cache_miss`` is
DeepSeek's own figure when sent, else ``input - cache_hit``.
"""

from __future__ import annotations

from typing import Any

from sidecar.exchange import Usage


def _int(value: Any) -> int | None:
    """A token count, or None: a negative count is no count (a counter never goes down)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def _sub(obj: Any, key: str) -> dict[str, Any]:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def from_openai(u: dict[str, Any]) -> Usage:
    """Chat/completions usage (DeepSeek, OpenAI) and Responses API usage."""
    if "prompt_tokens" in u:
        prompt = _int(u.get("prompt_tokens"))
        output = _int(u.get("completion_tokens"))
        cached = _int(_sub(u, "prompt_tokens_details").get("cached_tokens"))
        reasoning = _int(_sub(u, "completion_tokens_details").get("reasoning_tokens"))
    else:  # Responses API: input_tokens include cached ones, like prompt_tokens
        prompt = _int(u.get("input_tokens"))
        output = _int(u.get("output_tokens"))
        cached = _int(_sub(u, "input_tokens_details").get("cached_tokens"))
        reasoning = _int(_sub(u, "output_tokens_details").get("reasoning_tokens"))
    hit = _int(u.get("prompt_cache_hit_tokens"))
    if hit is None:
        hit = cached
    miss = _int(u.get("prompt_cache_miss_tokens"))
    if miss is None and prompt is not None and hit is not None:
        miss = max(prompt - hit, 0)  # an upstream reporting more hits than input tokens
    return Usage(input=prompt, output=output, cache_hit=hit, cache_miss=miss, reasoning=reasoning)


def from_anthropic(u: dict[str, Any]) -> Usage:
    """Anthropic Messages usage: cache reads and writes are additive to ``input_tokens``."""
    base = _int(u.get("input_tokens"))
    read = _int(u.get("cache_read_input_tokens"))
    write = _int(u.get("cache_creation_input_tokens"))
    total = None if base is None else base + (read or 0) + (write or 0)
    return Usage(
        input=total,
        output=_int(u.get("output_tokens")),
        cache_hit=read,
        cache_miss=None if total is None or read is None else total - read,
        cache_write=write,
    )


def from_realtime(u: dict[str, Any]) -> Usage:
    """A realtime ``response.done`` usage: ``input_tokens`` include the cached ones, which are
    under ``input_token_details`` (no "s", unlike the Responses API)."""
    prompt = _int(u.get("input_tokens"))
    hit = _int(_sub(u, "input_token_details").get("cached_tokens"))
    miss = None if prompt is None or hit is None else max(prompt - hit, 0)
    return Usage(input=prompt, output=_int(u.get("output_tokens")), cache_hit=hit, cache_miss=miss)


def summed(old: Usage | None, new: Usage) -> Usage:
    """A realtime session bills each response on its own: the session's usage is their sum.

    A field no response reported stays ``None`` (not reported is not 0)."""
    if old is None:
        return new
    total = Usage()
    for name in ("input", "output", "cache_hit", "cache_miss", "reasoning", "cache_write"):
        a, b = getattr(old, name), getattr(new, name)
        setattr(total, name, b if a is None else a if b is None else a + b)
    return total


def merge_max(old: Usage | None, new: Usage) -> Usage:
    """Anthropic streams split usage over message_start and message_delta: keep each max."""
    if old is None:
        return new
    merged = Usage()
    for name in ("input", "output", "cache_hit", "cache_miss", "reasoning", "cache_write"):
        a, b = getattr(old, name), getattr(new, name)
        setattr(merged, name, b if a is None else a if b is None else max(a, b))
    return merged


def find_usage(obj: Any) -> tuple[dict[str, Any], bool] | None:
    """Locate a usage object in a body or event; the flag says "Anthropic dialect"."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        nested = _sub(obj, "message") or _sub(obj, "response")
        usage = nested.get("usage")
        if not isinstance(usage, dict):
            return None
    anthropic = "cache_read_input_tokens" in usage or (
        "input_tokens" in usage
        and "input_tokens_details" not in usage
        and obj.get("type") in ("message", "message_start", "message_delta")
    )
    return usage, anthropic


def find_model(obj: Any) -> str | None:
    """The model named in a body or event (top level, Anthropic ``message``, Responses)."""
    if not isinstance(obj, dict):
        return None
    model = obj.get("model")
    if not isinstance(model, str):
        model = (_sub(obj, "message") or _sub(obj, "response")).get("model")
    return model if isinstance(model, str) and model else None


def find_response_id(obj: Any) -> str | None:
    """The upstream's id of the answer (``chatcmpl-…``, ``msg_…``, ``resp_…``)."""
    if not isinstance(obj, dict):
        return None
    rid = obj.get("id")
    if not isinstance(rid, str):
        rid = (_sub(obj, "message") or _sub(obj, "response")).get("id")
    return rid if isinstance(rid, str) and rid else None


def find_finish_reasons(obj: Any) -> dict[int, str]:
    """Finish reasons by choice index (OpenAI ``choices[].finish_reason``; Anthropic
    ``stop_reason``, top level or in a ``message_delta``'s ``delta``, as choice 0)."""
    if not isinstance(obj, dict):
        return {}
    found: dict[int, str] = {}
    choices = obj.get("choices")
    if isinstance(choices, list):
        for position, choice in enumerate(choices):
            if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                index = choice.get("index")
                found[index if isinstance(index, int) else position] = choice["finish_reason"]
        return found
    stop = obj.get("stop_reason")
    if not isinstance(stop, str):
        stop = _sub(obj, "delta").get("stop_reason")
    if isinstance(stop, str) and stop:
        found[0] = stop
    return found
