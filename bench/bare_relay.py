"""Reference point, not the product: the smallest aiohttp streaming relay.

Same shape as the sidecar's data path (``web.Server`` -> ``ClientSession`` -> stream each
upstream read to the client) with no metrics, no logging, no parsing, no retries. The bench
runs it beside the sidecar so the cost of aiohttp itself and the cost of the sidecar's own
work can be told apart. ``python bench/bare_relay.py UPSTREAM_URL PORT``.
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from serving import serve_until_signalled

HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "content-length"})


async def main(upstream: str, port: int) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
    )

    async def relay(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with session.request(
            request.method, upstream + request.raw_path, headers=headers, data=body or None
        ) as up:
            response = web.StreamResponse(status=up.status, reason=up.reason)
            for name, value in up.headers.items():
                if name.lower() not in HOP or name.lower() == "content-length":
                    response.headers.add(name, value)
            await response.prepare(request)
            while chunk := await up.content.readany():
                await response.write(chunk)
            await response.write_eof()
            return response

    await serve_until_signalled(web.Server(relay, access_log=None), port)
    await session.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1].rstrip("/"), int(sys.argv[2])))
