"""The demo's traffic: the request mix sent through the sidecar with the official OpenAI SDK.

The SDK's own retries are off so every 429 shows up in the metrics.
"""

from __future__ import annotations

from typing import Any

import openai
from openai import AsyncOpenAI

from sidecar.console.traffic import ChatRequest, Result, Tally, Traffic

__all__ = ["Tally", "Workload"]


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

    async def close(self) -> None:
        """Cancel what is still in flight and close the SDK client."""
        await self.cancel()
        await self.client.close()
