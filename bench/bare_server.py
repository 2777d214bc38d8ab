"""Reference point, not the product: an aiohttp server answering the upstream's bytes itself.

Same bodies, headers and chunking as ``bench/upstream.py`` (the JSON completion; an SSE stream
of ``x-bench-chunks`` events, one write and one HTTP chunk each, back to back unless
``x-bench-interval-ms`` asks for a gap), served by aiohttp's ``web.Server`` on uvloop with no
proxying at all. A relay does a server's work plus a client's, so about twice this server's
CPU is the floor for a Python relay; the bench reports the sidecar as a ratio to it.
``python bench/bare_server.py PORT``.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from payloads import CHUNKS_HEADER, INTERVAL_HEADER, json_body, sse_events
from serving import serve_until_signalled

JSON_HEADERS = {"Content-Type": "application/json", "x-ds-trace-id": "bench"}
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "x-ds-trace-id": "bench",
}


async def answer(request: web.BaseRequest) -> web.StreamResponse:
    body = await request.read()
    if b'"stream":true' not in body.replace(b" ", b""):
        return web.Response(body=json_body(), headers=JSON_HEADERS)
    chunks = int(request.headers.get(CHUNKS_HEADER, "100"))
    interval = float(request.headers.get(INTERVAL_HEADER, "0")) / 1000.0
    response = web.StreamResponse(headers=SSE_HEADERS)
    response.enable_chunked_encoding()
    await response.prepare(request)
    for event in sse_events(chunks):
        await response.write(event)  # each event its own HTTP chunk, as the upstream sends it
        if interval:
            await asyncio.sleep(interval)
    await response.write_eof()
    return response


async def main(port: int) -> None:
    await serve_until_signalled(web.Server(answer, access_log=None), port)


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
