"""Scrape loop shared by ``top`` and ``demo``: fetch ``/metrics``, compute, render, repeat.

On a TTY it drives ``rich.live.Live``; otherwise it prints one plain frame per refresh, so the
output of a piped run (or a test) is readable line by line.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable

import aiohttp
from rich.live import Live

from sidecar.console.snapshot import Scrape, View, compute, merge, parse
from sidecar.console.view import render, render_text


class Watcher:
    """Scrapes a set of ``/metrics`` URLs and keeps the previous scrape for rates."""

    def __init__(self, urls: list[str], session: aiohttp.ClientSession) -> None:
        self.urls = urls
        self.session = session
        self.prev: Scrape | None = None
        self.errors: list[str] = []

    async def _fetch(self, url: str) -> str | None:
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with self.session.get(url, timeout=timeout) as resp:
                resp.raise_for_status()
                return await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors.append(f"{url}: {type(exc).__name__}")
            return None

    async def scrape(self) -> Scrape:
        self.errors = []
        texts = await asyncio.gather(*(self._fetch(url) for url in self.urls))
        parts = []
        for url, text in zip(self.urls, texts, strict=True):
            if text is None:
                continue
            try:
                parts.append(parse(text))
            except ValueError:
                self.errors.append(f"{url}: unparsable metrics")
        return merge(time.monotonic(), parts)

    async def refresh(self) -> View:
        """One scrape, compared with the previous one."""
        cur = await self.scrape()
        view = compute(self.prev, cur)
        self.prev = cur
        return view

    def footer(self, extra: str = "") -> str:
        lines = [f"unreachable: {e}" for e in self.errors]
        return "\n".join([*lines, extra] if extra else lines)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Ctrl-C and SIGTERM end the loop cleanly instead of raising mid-render."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def run_view(
    watcher: Watcher,
    title: str,
    interval: float,
    stop: asyncio.Event,
    footer: Callable[[], str] = lambda: "",
) -> View:
    """Refresh every ``interval`` seconds until ``stop`` is set; returns the last view."""
    view = await watcher.refresh()  # baseline: rates need two scrapes
    if sys.stdout.isatty():
        with Live(render(view, title), refresh_per_second=4, transient=False) as live:
            while not stop.is_set():
                await _pause(stop, interval)
                view = await watcher.refresh()
                live.update(render(view, title, watcher.footer(footer())))
        return view
    while not stop.is_set():
        await _pause(stop, interval)
        if stop.is_set() and watcher.prev is not None:
            break  # a frame over a fraction of the interval would only show noisy rates
        view = await watcher.refresh()
        print(render_text(view, title, watcher.footer(footer())), flush=True)
    return view
