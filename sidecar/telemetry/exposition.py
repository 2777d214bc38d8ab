"""``/metrics`` served without stalling the streams that share its event loop.

Why not ``prometheus_client.aiohttp``: its handler renders the whole exposition in one
synchronous call on the event loop that also relays every stream. At the label caps (~33,000
lines, 4 MB) one scrape held the loop for 0.5-0.9 s. A worker thread does not help: rendering
is pure Python and holds the GIL, which uvloop must take back for every callback
(docs/benchmark.md, "What a scrape costs the streams", has the figures). Here a scrape:

* negotiates exactly as prometheus_client does (``choose_encoder``: text 0.0.4 or 1.0.0,
  OpenMetrics 1.0.0 with its exemplars; ``gzip_accepted``) and answers gzip when asked;
* renders with ``rendering.pieces``, handing the loop back after every ``SLICE_S`` of work,
  and gzips each slice as it goes;
* shares one rendering between concurrent scrapes of the same format (single flight), and
  serves it again until ``MAX_AGE_S`` after it started: the values in a response are at most
  that old, and a scraper polling faster costs one rendering per ``MAX_AGE_S``.

Requests the fast path cannot reproduce byte for byte (``name[]`` filters, other escapings or
versions, what ``rendering`` calls ``Unsupported``) get prometheus_client's own output.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from time import monotonic, perf_counter

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, generate_latest, gzip_accepted
from prometheus_client.openmetrics import exposition as openmetrics

from sidecar.telemetry.rendering import Unsupported, pieces

__all__ = ["MAX_AGE_S", "SLICE_S", "Exposition"]

# Longest run of rendering work between two turns of the event loop. A relayed chunk crosses
# two turns (read, then write); at 0.5 ms the loop's median lag during a rendering at the caps
# was 0.8 ms, at 0.2 ms it is 0.1 ms, for the same rendering time.
SLICE_S = 0.0002
# How long a rendering is served again. Prometheus scrapes every 15-60 s, so this only merges
# scrapes that come together (an HA pair) or a scraper polling faster than once a second.
MAX_AGE_S = 1.0
# gzip level 1: a third of the CPU of the default level 6, output ~25% larger.
GZIP_LEVEL = 1
_GZIP_WBITS = 31  # zlib's way to ask for the gzip container
_FAST_ESCAPINGS = frozenset({openmetrics.UNDERSCORES, openmetrics.ALLOWUTF8})


@dataclass(frozen=True, slots=True)
class Rendering:
    body: bytes
    started_at: float  # monotonic


@dataclass(frozen=True, slots=True)
class _Format:
    content_type: str
    openmetrics: bool
    escaping: str
    gzip: bool

    def encoder(self) -> Callable[[CollectorRegistry], bytes]:
        """prometheus_client's encoder for this format."""
        if self.openmetrics:
            return partial(openmetrics.generate_latest, escaping=self.escaping, version="1.0.0")
        return partial(generate_latest, escaping=self.escaping)


class Exposition:
    """The ``/metrics`` handler of one registry; ``renders`` counts the renderings started."""

    def __init__(
        self, registry: CollectorRegistry, max_age_s: float = MAX_AGE_S, slice_s: float = SLICE_S
    ) -> None:
        self.registry = registry
        self.max_age_s = max_age_s
        self.slice_s = slice_s
        self.renders = 0
        self._cache: dict[_Format, Rendering] = {}
        self._inflight: dict[_Format, asyncio.Task[Rendering]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
        use_gzip = gzip_accepted(",".join(request.headers.getall(hdrs.ACCEPT_ENCODING, [])))
        fmt = _fast_format(accept, use_gzip)
        names = request.query.getall("name[]", [])
        if fmt is None or names:
            return self._library(accept, use_gzip, names)
        cached = self._cache.get(fmt)
        if cached is None or monotonic() - cached.started_at >= self.max_age_s:
            cached = await asyncio.shield(self._rendering(fmt))  # a scraper leaving stops nothing
        return _response(cached.body, fmt.content_type, fmt.gzip)

    async def pause(self) -> None:
        """Between two slices of a rendering: the relay's turn (tests hold a rendering here)."""
        await asyncio.sleep(0)

    def _rendering(self, fmt: _Format) -> asyncio.Task[Rendering]:
        """The rendering in progress for ``fmt``, or a new one (single flight)."""
        task = self._inflight.get(fmt)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._render(fmt))
            self._inflight[fmt] = task
            task.add_done_callback(partial(self._rendered, fmt))
        return task

    def _rendered(self, fmt: _Format, task: asyncio.Task[Rendering]) -> None:
        del self._inflight[fmt]
        if task.cancelled() or task.exception() is not None:
            return
        rendering = self._cache[fmt] = task.result()
        # Drop it once stale, so a format nobody asks for again holds no memory.
        asyncio.get_running_loop().call_later(self.max_age_s, self._expire, fmt, rendering)

    def _expire(self, fmt: _Format, rendering: Rendering) -> None:
        if self._cache.get(fmt) is rendering:
            del self._cache[fmt]

    async def _render(self, fmt: _Format) -> Rendering:
        self.renders += 1
        started_at = monotonic()
        body = _Body(fmt.gzip)
        try:
            deadline = perf_counter() + self.slice_s
            for piece in pieces(self.registry, fmt.openmetrics):
                body.add(piece)
                if perf_counter() >= deadline:
                    body.flush()
                    await self.pause()
                    deadline = perf_counter() + self.slice_s
        except Unsupported:
            body = _Body(fmt.gzip)
            body.write(fmt.encoder()(self.registry))
        return Rendering(body.close(), started_at)

    def _library(self, accept: str, use_gzip: bool, names: list[str]) -> web.Response:
        """prometheus_client's own output, rendered at once: for the rare requests above."""
        encoder, content_type = choose_encoder(accept)
        body = _Body(use_gzip)
        body.write(encoder(self.registry.restricted_registry(names) if names else self.registry))
        return _response(body.close(), content_type, use_gzip)


class _Body:
    """A response body as it is rendered: text in, bytes out, gzipped if asked."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS) if gzip else None
        self._text: list[str] = []
        self._out: list[bytes] = []

    def add(self, text: str) -> None:
        self._text.append(text)

    def flush(self) -> None:
        self.write("".join(self._text).encode())
        self._text.clear()

    def write(self, data: bytes) -> None:
        self._out.append(data if self._gzip is None else self._gzip.compress(data))

    def close(self) -> bytes:
        self.flush()
        if self._gzip is not None:
            self._out.append(self._gzip.flush())
        return b"".join(self._out)


def _fast_format(accept: str, use_gzip: bool) -> _Format | None:
    """The format ``choose_encoder`` picks, if ``rendering`` reproduces it exactly."""
    encoder, content_type = choose_encoder(accept)
    keywords = getattr(encoder, "keywords", {})
    escaping = keywords.get("escaping", openmetrics.UNDERSCORES)
    is_openmetrics = getattr(encoder, "func", encoder) is openmetrics.generate_latest
    if escaping not in _FAST_ESCAPINGS or (is_openmetrics and keywords.get("version") != "1.0.0"):
        return None
    return _Format(content_type, is_openmetrics, escaping, use_gzip)


def _response(body: bytes, content_type: str, gzipped: bool) -> web.Response:
    headers = {hdrs.CONTENT_TYPE: content_type}
    if gzipped:
        headers[hdrs.CONTENT_ENCODING] = "gzip"
    return web.Response(body=body, headers=headers)
