"""The demo's traffic: the request mix sent through the sidecar with the official OpenAI SDK.

The SDK's own retries are off so every 429 shows up in the metrics. Every few seconds a
realtime session (the SDK's WebSocket client, ``openai[realtime]``) runs two text turns, so
sessions, their tokens and their cache hits show up too.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from typing import Any

import openai
from openai import AsyncOpenAI

from sidecar.console.traffic import PROMPTS, TOPICS, ChatRequest, Result, Tally, Traffic

__all__ = ["Tally", "Workload"]

# Without the realtime extra (the ``websockets`` package) the demo sends chat traffic only.
REALTIME = importlib.util.find_spec("websockets") is not None
REALTIME_MODEL = "deepseek-flash"
REALTIME_EVERY_S = 3.0  # a few sessions a minute next to ~6 chat requests a second


class Workload(Traffic):
    """The mix, each request sent with ``AsyncOpenAI``."""

    def __init__(self, base_url: str, seed: int, tally: Tally) -> None:
        self.client = AsyncOpenAI(base_url=base_url, api_key="sk-demo-0000", max_retries=0)
        super().__init__(self.send_with_sdk, seed, tally)

    async def send_with_sdk(self, request: ChatRequest) -> Result:
        messages: Any = request.messages()
        try:
            if request.stream:
                chunks = await self.client.chat.completions.create(
                    model=request.model,
                    messages=messages,
                    stream=True,
                    max_tokens=request.max_tokens,
                    stream_options={"include_usage": request.include_usage},
                )
                async for _ in chunks:
                    pass
            else:
                await self.client.chat.completions.create(
                    model=request.model, messages=messages, max_tokens=request.max_tokens
                )
        except openai.RateLimitError:
            return Result.RATE_LIMITED
        except (openai.APIError, ValueError):
            return Result.ERROR
        return Result.OK

    async def run(self, stop: asyncio.Event, burst_every_s: float = 5.0, burst: int = 14) -> None:
        """The chat mix, and a realtime session every ``REALTIME_EVERY_S``."""
        sessions = asyncio.create_task(self._sessions(stop)) if REALTIME else None
        try:
            await super().run(stop, burst_every_s, burst)
        finally:
            if sessions is not None:
                await sessions

    async def _sessions(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            task = asyncio.create_task(self.session())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=REALTIME_EVERY_S)

    async def session(self) -> None:
        self.tally.sent += 1
        self.tally.add(await self.converse(self.rng.choice(PROMPTS), self.rng.choice(TOPICS)))

    async def converse(self, system: str, topic: str) -> Result:
        """Two turns on one realtime connection, after a shared system prompt (cache hits)."""
        try:
            async with self.client.realtime.connect(model=REALTIME_MODEL) as connection:
                await connection.conversation.item.create(
                    item={
                        "type": "message",
                        "role": "system",
                        "content": [{"type": "input_text", "text": system}],
                    }
                )
                for ask in (f"Explain {topic} briefly.", "An example?"):
                    await connection.conversation.item.create(
                        item={
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_text", "text": ask}],
                        }
                    )
                    await connection.response.create()
                    async for event in connection:
                        if event.type == "error":
                            return Result.ERROR
                        if event.type == "response.done":
                            break
        except Exception:  # a failed demo session of any kind is tallied, never raised
            return Result.ERROR
        return Result.OK

    async def close(self) -> None:
        """Cancel what is still in flight and close the SDK client."""
        await self.cancel()
        await self.client.close()
