"""Pooled connections the upstream closes: resent once when that is safe, counted honestly."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from sidecar.app import bound_port
from sidecar.relay.pool import POOL_IDLE_S
from tests.egress_helpers import egress_sidecar
from tests.fake_upstream import FakeUpstream
from tests.raw_upstream import DEFAULT_REPLY, RESET, RawUpstream

CHAT = "/v1/chat/completions"
BODY = b'{"model":"deepseek-chat","messages":[]}'
IDLE_S = 0.05  # the upstream's keep-alive timeout, far below the sidecar's pool expiry


@pytest.fixture
async def raw() -> AsyncIterator[tuple[RawUpstream, str]]:
    upstream = RawUpstream()
    url = await upstream.start()
    yield upstream, url
    await upstream.close()


async def test_racing_idle_timeout_gives_no_502_for_replayable_requests(
    client: aiohttp.ClientSession,
) -> None:
    """Requests spaced around the upstream's idle timeout: every race is resent, none fails.

    A race needs the upstream's close to cross a request on the wire, a window of about a
    round trip in a jitter of milliseconds, and the pool's check catches every close that
    arrived before the write; so the requests go on (up to 600) until races have been seen.
    """
    assert IDLE_S < POOL_IDLE_S
    fake = FakeUpstream()
    runner = web.AppRunner(fake.app(), keepalive_timeout=IDLE_S)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    rng = random.Random(7)
    statuses: list[int] = []
    try:
        async with egress_sidecar(f"http://127.0.0.1:{bound_port(runner)}") as sc:
            sent = 0
            while sent < 150 or (sent < 600 and not any(x["attempts"] > 1 for x in sc.exchanges())):
                i, sent = sent, sent + 1
                if i % 3:
                    request = client.post(
                        sc.url + CHAT, data=BODY, headers={"Idempotency-Key": f"k{i}"}
                    )
                else:
                    request = client.get(sc.url + "/v1/models")
                async with request as response:
                    await response.read()
                    statuses.append(response.status)
                await asyncio.sleep(IDLE_S + rng.uniform(-0.003, 0.003))
            resent = [x for x in sc.exchanges() if x["attempts"] > 1]
            failed = [
                (i, x["method"], x["error_type"], x["attempts"])
                for i, x in enumerate(sc.exchanges())
                if x["code"] != 200
            ]
            assert statuses == [200] * sent, failed
            assert resent, "no request met a closed connection: the test proved nothing"
            errors = sc.attempts("error") + sc.attempts("error", route="models")
            # each resend follows one failed attempt; the real one is counted with its code
            assert errors == sum(x["attempts"] - 1 for x in resent)
            assert sc.attempts("200") + sc.attempts("200", route="models") == sent
            # a replayable request the upstream had read before closing may arrive twice
            assert sent <= len(fake.received) <= sent + errors
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("method", "headers", "resent"),
    [
        ("POST", {}, False),
        ("POST", {"Idempotency-Key": "abc"}, True),
        ("POST", {"X-Idempotency-Key": "abc"}, True),
        ("GET", {}, True),
    ],
    ids=["post", "post-idempotency-key", "post-x-idempotency-key", "get"],
)
async def test_reset_after_the_request_was_written_is_resent_only_when_replayable(
    raw: tuple[RawUpstream, str],
    client: aiohttp.ClientSession,
    method: str,
    headers: dict[str, str],
    resent: bool,
) -> None:
    """The upstream read the request, then reset: it may have acted on a POST (Go's rule)."""
    upstream, url = raw
    upstream.push(list(DEFAULT_REPLY), [RESET])
    async with egress_sidecar(url) as sc:
        async with client.post(sc.url + CHAT, data=BODY) as response:  # fills the pool
            assert response.status == 200
        data = BODY if method == "POST" else None
        async with client.request(method, sc.url + CHAT, data=data, headers=headers) as response:
            await response.read()
            assert response.status == (200 if resent else 502)
        assert upstream.connections == (2 if resent else 1)
        assert sc.attempts("error") == 1
        assert sc.attempts("200") == (2 if resent else 1)
        last = sc.exchanges()[-1]
        assert last["attempts"] == (2 if resent else 1)
        if not resent:
            assert last["error_type"] == "upstream_unreachable"


async def test_a_fresh_connection_that_breaks_is_never_resent(
    raw: tuple[RawUpstream, str], client: aiohttp.ClientSession
) -> None:
    """Nothing says the pool was at fault: a GET on a new connection fails once, as it is."""
    upstream, url = raw
    upstream.push([RESET])
    async with (
        egress_sidecar(url) as sc,
        client.get(sc.url + "/v1/models") as response,
    ):
        assert response.status == 502
        assert upstream.connections == 1
        assert sc.attempts("error", route="models") == 1
