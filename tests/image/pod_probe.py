"""Helpers that run inside the image, in the test pod, with the image's own Python and aiohttp.

The test passes this file's text to ``python -c`` in a container of the image under test, so it
needs nothing from the host and sees the pod's loopback, where the sidecar's proxy listens.

``tap`` is a recording relay between the sidecar and the simulator. It streams each response on
chunk by chunk and keeps a copy of every byte it sent, keyed by the ``x-request-id`` the sidecar
forwards. The simulator stamps each response with a fresh id and timestamp, so no two responses
are alike; comparing what the client received with the tap's copy of what the upstream side sent
for that very exchange proves byte transparency with no normalisation at all.

``stream`` is the client: one streaming chat completion through the sidecar, then the tap's copy
of it; it prints one JSON object with the comparison for the test to assert on.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

# Connection-level headers belong to one hop; everything else passes through the tap unchanged.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
SENT: web.AppKey[dict[str, bytes]] = web.AppKey("sent", dict)
UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)


def end_to_end(headers: Any) -> CIMultiDict[str]:
    """The headers a relay forwards: all but the hop-by-hop ones, repeated names kept."""
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP)


async def relay(request: web.Request) -> web.StreamResponse:
    """Forward one request upstream; stream the body back while keeping a copy of it."""
    if request.path == "/_tap/ready":
        return web.Response(text="ok")
    if request.path.startswith("/_tap/sent/"):
        sent = request.app[SENT].get(request.path.removeprefix("/_tap/sent/"))
        return web.Response(body=sent) if sent is not None else web.Response(status=404)
    url = request.app[UPSTREAM] + request.path_qs
    body = await request.read()
    session = request.app[SESSION]
    async with session.request(
        request.method, url, headers=end_to_end(request.headers), data=body
    ) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(end_to_end(upstream.headers))
        await response.prepare(request)
        copy = bytearray()
        async for chunk in upstream.content.iter_any():
            copy += chunk
            await response.write(chunk)
        await response.write_eof()
    request.app[SENT][request.headers.get("x-request-id", "")] = bytes(copy)
    return response


async def client_session(app: web.Application) -> Any:
    """One upstream session for the tap's lifetime; bodies are relayed still encoded."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        app[SESSION] = session
        yield


def tap(port: int, upstream: str) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SENT] = {}
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(client_session)
    app.router.add_route("*", "/{tail:.*}", relay)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


async def wait_ready(session: aiohttp.ClientSession, url: str, deadline_s: float) -> None:
    """Containers of a pod start in parallel: wait for the tap before the first request."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        if time.monotonic() > end:
            raise TimeoutError(f"{url} not ready after {deadline_s} s")
        await asyncio.sleep(0.2)


async def stream(proxy: str, tap_url: str, request_id: str) -> dict[str, Any]:
    body = orjson.dumps(
        {
            "model": "deepseek-reasoner",
            "messages": [{"role": "user", "content": "Say hello in three languages: hé, 你好"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    headers = {
        "Authorization": "Bearer sk-image-test",
        "Content-Type": "application/json",
        "x-request-id": request_id,
    }
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        await wait_ready(session, f"{tap_url}/_tap/ready", 30.0)
        chunks: list[bytes] = []
        started = time.monotonic()
        first_chunk_s = 0.0
        async with session.post(f"{proxy}/chat/completions", data=body, headers=headers) as resp:
            async for chunk in resp.content.iter_any():
                if not chunks:
                    first_chunk_s = time.monotonic() - started
                chunks.append(chunk)
            status, content_type = resp.status, resp.headers.get("Content-Type", "")
        total_s = time.monotonic() - started
        async with session.get(f"{tap_url}/_tap/sent/{request_id}") as copy:
            sent = await copy.read() if copy.status == 200 else b""
    received = b"".join(chunks)
    mismatch = next(
        (i for i, (a, b) in enumerate(zip(received, sent, strict=False)) if a != b),
        min(len(received), len(sent)),
    )
    return {
        "status": status,
        "content_type": content_type,
        "identical": received == sent,
        "received_bytes": len(received),
        "sent_bytes": len(sent),
        "received_sha256": hashlib.sha256(received).hexdigest(),
        "sent_sha256": hashlib.sha256(sent).hexdigest(),
        "first_mismatch": None if received == sent else mismatch,
        "chunks": len(chunks),
        "done": received.rstrip().endswith(b"data: [DONE]"),
        "usage": b'"usage":{' in received or b'"usage": {' in received,
        "first_chunk_s": round(first_chunk_s, 3),
        "total_s": round(total_s, 3),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pod_probe")
    commands = parser.add_subparsers(dest="command", required=True)
    tap_parser = commands.add_parser("tap")
    tap_parser.add_argument("--port", type=int, required=True)
    tap_parser.add_argument("--upstream", required=True)
    stream_parser = commands.add_parser("stream")
    stream_parser.add_argument("--proxy", required=True)
    stream_parser.add_argument("--tap", required=True)
    stream_parser.add_argument("--request-id", required=True)
    args = parser.parse_args(argv)
    if args.command == "tap":
        tap(args.port, args.upstream)
        return 0
    result = asyncio.run(stream(args.proxy, args.tap, args.request_id))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
