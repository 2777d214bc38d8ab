"""A realtime session of the simulator: OpenAI Realtime (GA) events over a WebSocket, text only.

``session.created`` on connect; ``conversation.item.create`` adds text to the conversation;
``response.create`` answers with ``response.created``, ``response.output_item.added``, one
``response.output_text.delta`` per token, ``response.output_text.done``,
``response.output_item.done`` and ``response.done``. Usage is billed as the Realtime API bills
it: the whole conversation so far is input, the part the prefix cache already holds (earlier
turns, in whole cache units) is ``input_token_details.cached_tokens``.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from sidecar.simulator import latency
from sidecar.simulator.state import SimState
from sidecar.simulator.tokens import count_tokens, generate_pieces


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _event(kind: str, **fields: Any) -> str:
    """One server event: ``type`` first, then ``event_id``, as the API orders them."""
    return orjson.dumps({"type": kind, "event_id": _id("event"), **fields}).decode()


def _text_of(item: Any) -> str:
    content = item.get("content") if isinstance(item, dict) else None
    parts = content if isinstance(content, list) else []
    texts = [p.get("text") for p in parts if isinstance(p, dict)]
    return "".join(t for t in texts if isinstance(t, str))


class Session:
    """One connection: the conversation text, and how to answer each client event."""

    def __init__(self, ws: web.WebSocketResponse, state: SimState, key: str, model: str) -> None:
        self.ws, self.state, self.key, self.model = ws, state, key, model
        self.id = _id("sess")
        self.conversation = ""

    def session(self) -> dict[str, Any]:
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "output_modalities": ["text"],
            "instructions": "",
            "max_output_tokens": "inf",
        }

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "conversation.item.create":
            given = event.get("item")
            sent: dict[str, Any] = given if isinstance(given, dict) else {}
            self.conversation += f"{sent.get('role', 'user')}\n{_text_of(sent)}\n"
            item = {"id": _id("item"), "object": "realtime.item", "status": "completed", **sent}
            await self.ws.send_str(_event("conversation.item.added", item=item))
            await self.ws.send_str(_event("conversation.item.done", item=item))
        elif kind == "response.create":
            await self.respond()
        elif kind == "session.update":
            await self.ws.send_str(_event("session.updated", session=self.session()))
        else:
            error = {"type": "invalid_request_error", "code": "unknown_event", "message": "?"}
            await self.ws.send_str(_event("error", error=error))

    async def respond(self) -> None:
        """Generate one text response with the chat simulator's latency model, then bill it."""
        s, ws = self.state.scenario, self.ws
        rng = random.Random(f"realtime|{self.state.seed}|{self.conversation}")
        prompt_tokens = count_tokens(self.conversation, s.chars_per_token)
        hit = 0
        if s.cache_enabled:
            hit = self.state.cache.lookup_and_store(self.key, self.conversation, prompt_tokens)
        pieces = generate_pieces(rng, rng.randint(s.min_output_tokens, s.max_output_tokens), False)
        rid, item_id = _id("resp"), _id("item")
        item: dict[str, Any] = {"id": item_id, "type": "message", "status": "in_progress"}
        item |= {"role": "assistant", "content": []}
        response: dict[str, Any] = {"object": "realtime.response", "id": rid}
        response |= {"status": "in_progress", "output": [], "output_modalities": ["text"]}
        where = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        await ws.send_str(_event("response.created", response=response))
        await ws.send_str(
            _event("response.output_item.added", response_id=rid, output_index=0, item=item)
        )
        await asyncio.sleep(latency.ttft_s(s, rng, prompt_tokens - hit, 0))
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(latency.decode_interval_s(s, rng, 0))
            await ws.send_str(_event("response.output_text.delta", **where, delta=piece))
        text = "".join(pieces)
        await ws.send_str(_event("response.output_text.done", **where, text=text))
        item |= {"status": "completed", "content": [{"type": "output_text", "text": text}]}
        await ws.send_str(
            _event("response.output_item.done", response_id=rid, output_index=0, item=item)
        )
        self.conversation += "assistant\n" + text + "\n"
        usage = self.usage(prompt_tokens, hit, len(pieces))
        self.state.accounts.get(self.key).charge(
            self.state.accounts.cost(self.model, hit, prompt_tokens - hit, len(pieces))
        )
        response |= {"status": "completed", "output": [item], "usage": usage}
        await ws.send_str(_event("response.done", response=response))

    @staticmethod
    def usage(prompt: int, hit: int, output: int) -> dict[str, Any]:
        return {
            "total_tokens": prompt + output,
            "input_tokens": prompt,
            "output_tokens": output,
            "input_token_details": {
                "text_tokens": prompt,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens": hit,
                "cached_tokens_details": {"text_tokens": hit, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": output, "audio_tokens": 0},
        }


async def realtime_session(
    request: web.Request, state: SimState, key: str, model: str
) -> web.WebSocketResponse:
    """Serve one session until the client closes it."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    session = Session(ws, state, key, model)
    await ws.send_str(_event("session.created", session=session.session()))
    async for message in ws:
        event = None
        if message.type == WSMsgType.TEXT:
            try:
                event = orjson.loads(message.data)
            except orjson.JSONDecodeError:
                event = None
        if isinstance(event, dict):
            await session.handle(event)
        else:
            error = {"type": "invalid_request_error", "code": "invalid_json", "message": "?"}
            await ws.send_str(_event("error", error=error))
    return ws
