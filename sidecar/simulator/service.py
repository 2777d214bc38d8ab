"""Serving one admitted request: wait for capacity, generate with realistic timing, inject faults.

The 200 status goes out first, as at DeepSeek, then keep-alives (``: keep-alive`` for streams,
``\\n`` for JSON) while the request waits for a slot. Non-streaming JSON is gzipped when the client
accepts it, blank lines included, flushed at each write so they reach the client as they happen.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from datetime import UTC, datetime

from aiohttp import web

from sidecar.simulator import latency
from sidecar.simulator.emitters import make_emitter
from sidecar.simulator.plan import Plan
from sidecar.simulator.state import SimState
from sidecar.simulator.wire import KEEPALIVE, Head, Usage


class BodyWriter:
    """Writes raw bytes, or one gzip stream with a sync flush after every write."""

    def __init__(self, resp: web.StreamResponse, gzip: bool) -> None:
        self._resp = resp
        self._zip = zlib.compressobj(wbits=31) if gzip else None

    async def write(self, data: bytes) -> None:
        if self._zip is not None:
            data = self._zip.compress(data) + self._zip.flush(zlib.Z_SYNC_FLUSH)
        await self._resp.write(data)

    async def end(self) -> None:
        if self._zip is not None:
            await self._resp.write(self._zip.flush(zlib.Z_FINISH))
        await self._resp.write_eof()


async def wait_for_slot(state: SimState, writer: BodyWriter, keepalive: bytes) -> None:
    """Hold the request in line, sending ``keepalive`` every interval until a slot is ours."""
    ticket = state.capacity.try_acquire()
    if ticket is None:
        return
    try:
        while True:
            done, _ = await asyncio.wait({ticket}, timeout=state.scenario.keepalive_interval_s)
            if done:
                return
            await writer.write(keepalive)
    except BaseException:
        state.capacity.abandon(ticket)
        raise


def make_head(state: SimState, plan: Plan) -> Head:
    """Ids are UUIDv4 (DeepSeek) or ``chatcmpl-``-style (OpenAI); fingerprint is 32 hex."""
    openai = state.scenario.flavour == "openai"
    rid = f"chatcmpl-{uuid.uuid4().hex[:29]}" if openai else str(uuid.uuid4())
    fingerprint = f"fp_{uuid.uuid4().hex[:10]}" if openai else state.fingerprint
    created = int(datetime.now(UTC).timestamp())
    return Head(rid, created, plan.model, fingerprint, state.scenario.flavour, "k3Pq9ZrT")


def start_usage(state: SimState, plan: Plan, api_key: str) -> Usage:
    """Look the prompt up in the prefix cache (storing it) and bill the request."""
    hit = 0
    if state.scenario.cache_enabled:
        hit = state.cache.lookup_and_store(api_key, plan.prompt, plan.prompt_tokens)
    reasoning = len(plan.reasoning) if plan.thinking else None
    completion = len(plan.reasoning) + len(plan.content)
    usage = Usage(prompt=plan.prompt_tokens, hit=hit, completion=completion, reasoning=reasoning)
    cost = state.accounts.cost(plan.model, hit, usage.miss, completion)
    state.accounts.get(api_key).charge(cost)
    return usage


async def serve(
    request: web.Request, state: SimState, plan: Plan, api_key: str, headers: dict[str, str]
) -> web.StreamResponse:
    """Send the whole response for ``plan``; aborts close the socket without a clean end."""
    gzip = not plan.stream and "gzip" in request.headers.get("Accept-Encoding", "")
    resp = web.StreamResponse(status=200, headers=headers)
    resp.content_type = "text/event-stream" if plan.stream else "application/json"
    if plan.stream:
        resp.headers["Cache-Control"] = "no-cache"
    if gzip:
        resp.headers["Content-Encoding"] = "gzip"
    await resp.prepare(request)
    writer = BodyWriter(resp, gzip)
    await wait_for_slot(state, writer, KEEPALIVE if plan.stream else b"\n")
    try:
        usage = start_usage(state, plan, api_key)
        emitter = make_emitter(plan, make_head(state, plan), usage)
        load = state.capacity.in_service
        ttft = latency.ttft_s(state.scenario, plan.rng, usage.miss, load)
        step = latency.decode_interval_s(state.scenario, plan.rng, load)
        if not plan.stream:
            await asyncio.sleep(ttft + step * max(0, usage.completion - 1))
            if plan.fault == "abort":
                return abort(request, resp)
            await writer.write(emitter.body())
            await writer.end()
            return resp
        await writer.write(emitter.opening())
        await asyncio.sleep(ttft)
        pieces = [("reasoning", p) for p in plan.reasoning] + [("content", p) for p in plan.content]
        for i, (kind, text) in enumerate(pieces):
            if i and plan.fault == "stall" and i == plan.fault_at:
                await asyncio.sleep(state.scenario.stall_s)
            if plan.fault == "abort" and i == plan.fault_at:
                return abort(request, resp)
            if i:
                await asyncio.sleep(step)
            await writer.write(emitter.piece(kind, text))
        if plan.fault == "abort":
            return abort(request, resp)
        await writer.write(emitter.closing())
        await writer.end()
        return resp
    finally:
        state.capacity.release()


def abort(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """Break the connection: the client sees the body end without its terminating chunk."""
    resp.force_close()
    if request.transport is not None:
        request.transport.close()
    return resp
