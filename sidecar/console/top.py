"""``deepseek-sidecar top``: the live view attached to running sidecars (several are summed)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

import aiohttp

from sidecar.console.live import Watcher, run_view, stop_on_signals
from sidecar.console.view import render_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepseek-sidecar top", description="live view of running sidecars' /metrics"
    )
    parser.add_argument("--metrics-url", nargs="+", required=True, metavar="URL")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    return parser


async def _run(urls: list[str], interval: float, once: bool) -> int:
    title = "deepseek-sidecar top  " + " + ".join(urls)
    async with aiohttp.ClientSession() as session:
        watcher = Watcher(urls, session)
        if once:
            await watcher.refresh()
            await asyncio.sleep(interval)
            view = await watcher.refresh()
            print(render_text(view, title, watcher.footer()), flush=True)
            return 1 if len(watcher.errors) == len(urls) else 0
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run_view(watcher, title, interval, stop)
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.interval <= 0:
        print("deepseek-sidecar top: --interval: bad value, must be > 0", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_run(args.metrics_url, args.interval, args.once))
    return 0
