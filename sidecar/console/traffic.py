"""A realistic request mix and the loop that sends it, whatever client sends each request.

Several models, streaming with and without ``include_usage``, three long system prompts shared
across requests (so the upstream's prefix cache hits), and a burst every few seconds that pushes
concurrency past the account's limit (429s) and the cluster's capacity (queueing). The demo
sends the mix with the official SDK (``workload``); ``loadgen`` with a plain HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

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


PROMPTS = tuple(system_prompt(n) for n in range(3))


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion of the mix, in the shape both clients can send."""

    model: str
    system: str
    user: str
    stream: bool
    include_usage: bool
    max_tokens: int

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


def pick(rng: random.Random) -> ChatRequest:
    """The next request of the mix: 70% streams, 60% of those asking for usage."""
    model = rng.choices([m for m, _ in MODELS], weights=[w for _, w in MODELS])[0]
    system = rng.choice(PROMPTS)
    user = f"Explain {rng.choice(TOPICS)} in {rng.randint(2, 9)} steps."
    stream = rng.random() < 0.7
    include_usage = rng.random() < 0.6
    return ChatRequest(model, system, user, stream, include_usage, rng.randint(24, 120))


class Result(StrEnum):
    """What the client saw for one request."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"
    ERROR = "error"


Send = Callable[[ChatRequest], Awaitable[Result]]


@dataclass
class Tally:
    """What the client saw, printed next to the sidecar's own view."""

    sent: int = 0
    ok: int = 0
    rate_limited: int = 0
    errors: int = 0

    def add(self, result: Result) -> None:
        if result is Result.OK:
            self.ok += 1
        elif result is Result.RATE_LIMITED:
            self.rate_limited += 1
        else:
            self.errors += 1

    def line(self, who: str = "demo client") -> str:
        return (
            f"{who}: sent {self.sent}, ok {self.ok}, 429 {self.rate_limited}, "
            f"other errors {self.errors}"
        )


class Traffic:
    """Steady arrivals plus periodic bursts until stopped; each request is one task."""

    def __init__(self, send: Send, seed: int, tally: Tally) -> None:
        self.send = send
        self.rng = random.Random(seed)
        self.tally = tally
        self.tasks: set[asyncio.Task[None]] = set()

    async def one(self) -> None:
        request = pick(self.rng)
        self.tally.sent += 1
        self.tally.add(await self.send(request))

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

    async def cancel(self) -> None:
        """Cancel what is still in flight."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
