"""Emitters turn a Plan plus its Usage into bytes, one per response format.

The service loop (``service.py``) owns timing, queueing and faults; an emitter only knows how a
format opens, carries one token, and closes. That keeps every format's grammar in one small class.
"""

from __future__ import annotations

from typing import Protocol

from sidecar.simulator import anthropic_wire as aw
from sidecar.simulator import wire
from sidecar.simulator.plan import Plan
from sidecar.simulator.wire import Head, Usage


class Emitter(Protocol):
    def opening(self) -> bytes: ...
    def piece(self, kind: str, text: str) -> bytes: ...
    def closing(self) -> bytes: ...
    def body(self) -> bytes: ...


class ChatEmitter:
    """``/chat/completions``: role chunk, reasoning then content deltas, finish chunk + usage."""

    def __init__(self, plan: Plan, head: Head, usage: Usage) -> None:
        self.plan, self.head, self.usage = plan, head, usage
        self.flavour = head.flavour
        self.finish = "length" if plan.truncated else "stop"

    def _null_usage(self) -> object:
        return None if self.plan.include_usage else ...

    def opening(self) -> bytes:
        delta = wire.first_delta(self.flavour, self.plan.thinking)
        return wire.chat_chunk(self.head, delta, None, self._null_usage())

    def piece(self, kind: str, text: str) -> bytes:
        if kind == "reasoning":
            delta = wire.reasoning_delta(text)
        else:
            delta = wire.content_delta(self.flavour, self.plan.thinking, text)
        return wire.chat_chunk(self.head, delta, None, self._null_usage())

    def closing(self) -> bytes:
        delta = wire.finish_delta(self.flavour, self.plan.thinking)
        usage = self.usage.to_wire(self.flavour)
        if self.flavour != "openai":
            return wire.chat_chunk(self.head, delta, self.finish, usage) + wire.DONE
        last = wire.chat_chunk(self.head, delta, self.finish, self._null_usage())
        if self.plan.include_usage:
            last += wire.usage_only_chunk(self.head, usage)
        return last + wire.DONE

    def body(self) -> bytes:
        reasoning = "".join(self.plan.reasoning) if self.plan.thinking else None
        content = "".join(self.plan.content)
        return wire.chat_body(self.head, content, reasoning, self.finish, self.usage)


class FimEmitter:
    """``/beta/completions``: ``text_completion`` chunks with ``choices[].text``."""

    def __init__(self, plan: Plan, head: Head, usage: Usage) -> None:
        self.plan, self.head, self.usage = plan, head, usage
        self.finish = "length" if plan.truncated else "stop"

    def _null_usage(self) -> object:
        return None if self.plan.include_usage else ...

    def opening(self) -> bytes:
        return b""

    def piece(self, kind: str, text: str) -> bytes:
        return wire.fim_chunk(self.head, text, None, self._null_usage())

    def closing(self) -> bytes:
        usage = self.usage.to_wire(self.head.flavour)
        return wire.fim_chunk(self.head, "", self.finish, usage) + wire.DONE

    def body(self) -> bytes:
        return wire.fim_body(self.head, "".join(self.plan.content), self.finish, self.usage)


class AnthropicEmitter:
    """``/anthropic/v1/messages``: thinking block (if any), then one text block."""

    def __init__(self, plan: Plan, head: Head, usage: Usage) -> None:
        self.plan, self.head, self.usage = plan, head, usage
        self.stop = "max_tokens" if plan.truncated else "end_turn"
        self._kind: str | None = None
        self._index = -1

    def opening(self) -> bytes:
        return aw.message_start(self.head.id, self.head.model, self.usage.miss, self.usage.hit)

    def _switch(self, kind: str) -> bytes:
        """Close the open block and open one of ``kind``; a ping follows the first block start."""
        out = aw.block_stop(self._index) if self._kind is not None else b""
        self._index += 1
        self._kind = kind
        out += aw.block_start(self._index, "thinking" if kind == "reasoning" else "text")
        return out + (aw.ping() if self._index == 0 else b"")

    def piece(self, kind: str, text: str) -> bytes:
        out = self._switch(kind) if kind != self._kind else b""
        block = "thinking" if kind == "reasoning" else "text"
        return out + aw.block_delta(self._index, block, text)

    def closing(self) -> bytes:
        out = self._switch("content") if self._kind != "content" else b""
        out += aw.block_stop(self._index)
        u = self.usage
        out += aw.message_delta(self.stop, u.miss, u.hit, u.completion)
        return out + aw.message_stop()

    def body(self) -> bytes:
        thinking = "".join(self.plan.reasoning) if self.plan.thinking else None
        u = self.usage
        usage = (u.miss, u.hit, u.completion)
        return aw.message_body(
            self.head.id, self.head.model, thinking, "".join(self.plan.content), self.stop, usage
        )


def make_emitter(plan: Plan, head: Head, usage: Usage) -> Emitter:
    if plan.kind == "fim":
        return FimEmitter(plan, head, usage)
    if plan.kind == "anthropic":
        return AnthropicEmitter(plan, head, usage)
    return ChatEmitter(plan, head, usage)
