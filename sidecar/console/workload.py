"""The demo's traffic: a realistic mix sent through the sidecar with the official OpenAI SDK.

Several models, streaming with and without ``include_usage``, three long system prompts shared
across requests (so the upstream's prefix cache hits), and a burst every few seconds that pushes
concurrency past the account's limit (429s) and the cluster's capacity (queueing). The SDK's own
retries are off so every 429 shows up in the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

MODELS = (
    ("deepseek-flash", 5),
    ("deepseek-v4-pro", 2),
    ("deepseek-chat", 2),
    ("deepseek-reasoner", 1),
)
TOPICS = ("invoices", "a flaky test", "queue depth", "cache keys", "a slow query", "rate limits")


def system_prompt(n: int) -> str:
    """A long, stable instruction block (~3 KB) so repeated use gives whole-unit cache hits."""
    rules = [
        f"Rule {n}.{i}: answer precisely, cite the step, keep units explicit." for i in range(50)
    ]
    return f"You are assistant #{n} of the operations team.\n" + "\n".join(rules)


@dataclass
class Tally:
    """What the demo client saw, printed in the summary next to the sidecar's view."""

    sent: int = 0
    ok: int = 0
    rate_limited: int = 0
    errors: int = 0

    def line(self) -> str:
        return (
            f"demo client: sent {self.sent}, ok {self.ok}, 429 {self.rate_limited}, "
            f"other errors {self.errors}"
        )


class Workload:
    """Steady arrivals plus periodic bursts until stopped."""

    def __init__(self, base_url: str, seed: int, tally: Tally) -> None:
        self.client = AsyncOpenAI(base_url=base_url, api_key="sk-demo-0000", max_retries=0)
        self.rng = random.Random(seed)
        self.tally = tally
        self.prompts = [system_prompt(n) for n in range(3)]
        self.tasks: set[asyncio.Task[None]] = set()

    async def one(self) -> None:
        rng = self.rng
        model = rng.choices([m for m, _ in MODELS], weights=[w for _, w in MODELS])[0]
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": rng.choice(self.prompts)},
            {
                "role": "user",
                "content": f"Explain {rng.choice(TOPICS)} in {rng.randint(2, 9)} steps.",
            },
        ]
        stream = rng.random() < 0.7
        include_usage = rng.random() < 0.6
        max_tokens = rng.randint(24, 120)
        self.tally.sent += 1
        try:
            if stream:
                chunks = await self.client.chat.completions.create(
                    model=model,
                    messages=messages,
                    stream=True,
                    max_tokens=max_tokens,
                    stream_options={"include_usage": include_usage},
                )
                async for _ in chunks:
                    pass
            else:
                await self.client.chat.completions.create(
                    model=model,
                    messages=messages,
                    max_tokens=max_tokens,
                )
            self.tally.ok += 1
        except openai.RateLimitError:
            self.tally.rate_limited += 1
        except (openai.APIError, ValueError):
            self.tally.errors += 1

    def launch(self) -> None:
        task = asyncio.create_task(self.one())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, stop: asyncio.Event, burst_every_s: float = 5.0, burst: int = 14) -> None:
        """About 6 requests per second, and ``burst`` at once every ``burst_every_s``."""
        loop = asyncio.get_running_loop()
        next_burst = loop.time() + 2.0
        while not stop.is_set():
            for _ in range(self.rng.choice((1, 1, 2))):
                self.launch()
            if loop.time() >= next_burst:
                for _ in range(burst):
                    self.launch()
                next_burst = loop.time() + burst_every_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.25)

    async def close(self) -> None:
        """Cancel what is still in flight and close the SDK client."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.close()
