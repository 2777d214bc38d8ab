"""Run an aiohttp ``web.Server`` on 127.0.0.1 until SIGTERM or SIGINT (the bench references)."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web


async def serve_until_signalled(server: web.Server, port: int) -> None:
    """Listen (backlog 4096: the memory phase opens 1000 connections at once), wait, clean up."""
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
