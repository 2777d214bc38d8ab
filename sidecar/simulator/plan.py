"""Plan of one response: thinking or not, how many tokens of each kind, and which fault.

Everything here is drawn from a ``random.Random`` seeded by the simulator seed and the request
body, so the same request under the same seed always gets the same text and lengths.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

import orjson

from sidecar.simulator.scenario import Scenario
from sidecar.simulator.tokens import count_tokens, generate_pieces, prompt_text

V4_MODELS = ("deepseek-flash", "deepseek-v4-pro", "deepseek-v4-flash")


@dataclass
class Plan:
    """What to send for one admitted request (cache hits are decided later, at service start)."""

    kind: str  # "chat", "fim" or "anthropic"
    model: str
    stream: bool
    include_usage: bool
    thinking: bool
    prompt: str
    prompt_tokens: int
    reasoning: list[str]
    content: list[str]
    truncated: bool
    rng: random.Random
    fault: str | None = None  # "abort" or "stall"
    fault_at: int = 0


def request_rng(seed: int, body: dict[str, Any]) -> random.Random:
    """A generator that depends only on the seed and the request body."""
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return random.Random(f"{seed}|{digest}")


def wants_thinking(kind: str, model: str, body: dict[str, Any], flavour: str) -> bool:
    """DeepSeek's rule: reasoner thinks, V4 names think unless disabled, others on request."""
    if kind == "fim" or flavour == "openai":
        return False
    thinking = body.get("thinking")
    mode = thinking.get("type") if isinstance(thinking, dict) else None
    if mode == "disabled":
        return False
    if mode == "enabled" or model == "deepseek-reasoner":
        return True
    return kind == "chat" and model.startswith(V4_MODELS)


def make_plan(scenario: Scenario, seed: int, kind: str, body: dict[str, Any]) -> Plan:
    """Draw lengths and text; reasoning + content never exceed ``max_tokens``."""
    model = str(body.get("model", ""))
    rng = request_rng(seed, body)
    thinking = wants_thinking(kind, model, body, scenario.flavour)
    n_reason = rng.randint(scenario.min_reasoning_tokens, scenario.max_reasoning_tokens)
    n_content = rng.randint(scenario.min_output_tokens, scenario.max_output_tokens)
    n_reason = n_reason if thinking else 0
    max_tokens = body.get("max_tokens")
    truncated = False
    if isinstance(max_tokens, int) and max_tokens > 0 and n_reason + n_content > max_tokens:
        truncated = True
        n_reason = min(n_reason, max_tokens)
        n_content = max_tokens - n_reason
    text = prompt_text(body)
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return Plan(
        kind=kind,
        model=model,
        stream=body.get("stream") is True,
        include_usage=include_usage,
        thinking=thinking,
        prompt=text,
        prompt_tokens=count_tokens(text, scenario.chars_per_token),
        reasoning=generate_pieces(rng, n_reason, leading_space=False),
        content=generate_pieces(rng, n_content, leading_space=False),
        truncated=truncated,
        rng=rng,
    )


def draw_fault(scenario: Scenario, rng: random.Random) -> str | None:
    """One of ``500``, ``503``, ``abort``, ``stall`` or None; always four draws per request."""
    draws = [rng.random() for _ in range(4)]
    if draws[0] < scenario.error_500_rate:
        return "500"
    if draws[1] < scenario.error_503_rate:
        return "503"
    if draws[2] < scenario.abort_rate:
        return "abort"
    if draws[3] < scenario.stall_rate:
        return "stall"
    return None
