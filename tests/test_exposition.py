"""/metrics over real sockets: prometheus_client's bytes, gzip, one rendering per flight."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder

from sidecar.telemetry.exposition import Exposition
from tests.conftest import RunningSidecar, require_binary
from tests.fake_upstream import FakeUpstream, sse
from tests.test_rendering import sidecar_registry

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


async def serve(aiohttp_server: Any, handler: Callable[..., Awaitable[web.StreamResponse]]) -> str:
    app = web.Application()
    app.router.add_get("/metrics", handler)
    server: TestServer = await aiohttp_server(app)
    return str(server.make_url("/metrics"))


async def get(url: str, accept: str | None = None, gzip_ok: bool = False) -> tuple[Any, bytes]:
    headers = {"Accept-Encoding": "gzip" if gzip_ok else "identity"}
    if accept is not None:
        headers["Accept"] = accept
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(url, headers=headers) as response,
    ):
        assert response.status == 200
        return response.headers, await response.read()


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "text/plain;version=0.0.4",
        "text/plain;version=1.0.0;escaping=allow-utf-8",
        PROMETHEUS_ACCEPT,
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
        "text/plain;version=1.0.0;escaping=dots",  # not the fast path: the library's output
        "application/openmetrics-text;version=2.0.0",  # likewise
    ],
)
async def test_each_format_is_what_prometheus_client_serves(
    aiohttp_server: Any, accept: str | None
) -> None:
    registry, _ = sidecar_registry()
    url = await serve(aiohttp_server, Exposition(registry).handle)
    headers, body = await get(url, accept)
    encoder, content_type = choose_encoder(accept or "")
    assert headers["Content-Type"] == content_type
    assert "Content-Encoding" not in headers
    assert body == encoder(registry)


async def test_gzip_when_the_scraper_asks_for_it(aiohttp_server: Any) -> None:
    registry, _ = sidecar_registry()
    exposition = Exposition(registry, max_age_s=0)
    url = await serve(aiohttp_server, exposition.handle)
    plain_headers, plain = await get(url, PROMETHEUS_ACCEPT)
    headers, body = await get(url, PROMETHEUS_ACCEPT, gzip_ok=True)
    assert headers["Content-Encoding"] == "gzip" and "Content-Encoding" not in plain_headers
    assert gzip.decompress(body) == plain
    assert plain.endswith(b"# EOF\n") and b'# {request_id="req-' in plain  # exemplars
    _, filtered = await get(url + "?name[]=llm_requests_total", gzip_ok=True)
    assert gzip.decompress(filtered) == choose_encoder("")[0](
        registry.restricted_registry(["llm_requests_total"])
    )


async def test_concurrent_scrapes_share_one_rendering(aiohttp_server: Any) -> None:
    registry, _ = sidecar_registry()
    gate = asyncio.Event()

    class Held(Exposition):
        async def pause(self) -> None:
            await gate.wait()

    exposition = Held(registry, slice_s=0)  # pauses after the first piece
    arrived = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        return await exposition.handle(request)  # runs up to its first await right away

    url = await serve(aiohttp_server, handler)
    scrapes = [asyncio.create_task(get(url, PROMETHEUS_ACCEPT, gzip_ok=True)) for _ in range(2)]
    while arrived < 2:
        await asyncio.sleep(0)
    gate.set()
    (_, first), (_, second) = await asyncio.gather(*scrapes)
    assert exposition.renders == 1
    assert first == second and gzip.decompress(first).endswith(b"# EOF\n")


async def test_a_rendering_is_served_until_max_age(aiohttp_server: Any) -> None:
    registry = CollectorRegistry()
    hits = Counter("hits", "Hits.", ["path"], registry=registry)
    hits.labels("/").inc()
    cached, fresh = Exposition(registry, max_age_s=3600), Exposition(registry, max_age_s=0)
    cached_url = await serve(aiohttp_server, cached.handle)
    fresh_url = await serve(aiohttp_server, fresh.handle)
    for url in (cached_url, fresh_url):
        _, body = await get(url)
        assert b'hits_total{path="/"} 1.0' in body
    hits.labels("/").inc()
    _, body = await get(cached_url)
    assert b'hits_total{path="/"} 1.0' in body and cached.renders == 1  # within the window
    _, body = await get(fresh_url)
    assert b'hits_total{path="/"} 2.0' in body and fresh.renders == 2


async def test_a_registry_it_cannot_reproduce_gets_prometheus_clients_output(
    aiohttp_server: Any,
) -> None:
    registry = CollectorRegistry()
    Counter("job:requests", "Recording-rule style name.", ["k"], registry=registry).labels("v")
    url = await serve(aiohttp_server, Exposition(registry).handle)
    for accept in (None, PROMETHEUS_ACCEPT):
        _, body = await get(url, accept, gzip_ok=True)
        assert gzip.decompress(body) == choose_encoder(accept or "")[0](registry)


def families(exposition: bytes) -> set[str]:
    return {line.split()[2] for line in exposition.decode().splitlines() if "# TYPE" in line}


async def test_the_sidecar_serves_the_same_families_as_prometheus_client_in_both_formats(
    fake_upstream: tuple[FakeUpstream, str], sidecar: RunningSidecar
) -> None:
    fake, _ = fake_upstream
    fake.push(sse("deepseek-chat-stream.sse"))
    async with (
        aiohttp.ClientSession() as client,
        client.post(sidecar.url + "/chat/completions", data=b"{}") as response,
    ):
        await response.read()
    headers, body = await get(sidecar.admin_url + "/metrics", PROMETHEUS_ACCEPT, gzip_ok=True)
    assert headers["Content-Encoding"] == "gzip"
    openmetrics = gzip.decompress(body)
    assert families(openmetrics) == families(choose_encoder(PROMETHEUS_ACCEPT)[0](sidecar.registry))
    assert {"llm_requests", "llm_request_duration_seconds", "process_open_fds"} <= families(
        openmetrics
    )
    _, text = await get(sidecar.admin_url + "/metrics")
    assert families(text) == families(choose_encoder("")[0](sidecar.registry))
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
