"""Reference /metrics handlers, not the product: what the scrape bench compares against.

``python bench/handlers.py VARIANT run [OPTIONS]`` runs ``deepseek-sidecar run`` with its
``/metrics`` handler replaced:

* ``stock``: ``prometheus_client.aiohttp.make_aiohttp_handler``, the handler before
  ``sidecar.telemetry.exposition``: one synchronous rendering per scrape, gzip by aiohttp;
* ``thread``: the sidecar's handler (single flight, a rendering served again for 1 s), but
  each rendering made by prometheus_client at once in a worker thread, gzip included;
* ``onloop``: the same, rendered by prometheus_client at once on the event loop.

``bench/scrape.py --handler VARIANT`` measures them against the same build.
"""

from __future__ import annotations

import asyncio
import sys
import zlib
from time import monotonic
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from sidecar import __main__ as cli
from sidecar import app
from sidecar.telemetry import exposition

VARIANTS = ("stock", "thread", "onloop")


class StockExposition:
    """Stands in for ``Exposition``: the same constructor and ``handle``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handle = make_aiohttp_handler(registry)


def render_at_once(self: Any, fmt: Any) -> bytes:
    body: bytes = fmt.encoder()(self.registry)
    if fmt.gzip:
        gzipper = zlib.compressobj(exposition.GZIP_LEVEL, zlib.DEFLATED, 31)
        body = gzipper.compress(body) + gzipper.flush()
    return body


async def render_in_thread(self: Any, fmt: Any) -> exposition.Rendering:
    self.renders += 1
    started_at = monotonic()
    return exposition.Rendering(await asyncio.to_thread(render_at_once, self, fmt), started_at)


async def render_on_loop(self: Any, fmt: Any) -> exposition.Rendering:
    self.renders += 1
    return exposition.Rendering(render_at_once(self, fmt), monotonic())


if __name__ == "__main__":
    variant = sys.argv[1] if len(sys.argv) > 1 else ""
    if variant not in VARIANTS:
        sys.exit(f"usage: handlers.py {{{','.join(VARIANTS)}}} run [OPTIONS]")
    if variant == "stock":
        app.Exposition = StockExposition  # type: ignore[misc,assignment]
    else:
        render = render_in_thread if variant == "thread" else render_on_loop
        exposition.Exposition._render = render  # type: ignore[method-assign]
    sys.exit(cli.main(sys.argv[2:]))
