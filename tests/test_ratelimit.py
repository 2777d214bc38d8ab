"""Rate-limit and cost features over real sockets: guard, retries, cost, balance, key, limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic

import aiohttp
import orjson
import pytest

from sidecar.accounting.catalogue import Catalogue
from tests.conftest import RunningSidecar, SidecarFactory, closed_port
from tests.fake_upstream import ABORT, FakeUpstream, Gate, Pause, Reply, fixture, json_reply

Upstream = tuple[FakeUpstream, str]
CHAT = b'{"model":"deepseek-flash","messages":[{"role":"user","content":"hi"}]}'
UP = {"upstream": "deepseek"}


async def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = monotonic() + timeout
    while not predicate():
        assert monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# --- concurrency guard -------------------------------------------------------------------


async def test_guard_admits_waiters_in_arrival_order(
    fake_upstream: Upstream, start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(url, max_concurrency=1, guard_max_wait_s=10)
    guard = sidecar.sidecar.proxy._guard
    assert guard is not None
    gates = [asyncio.Event() for _ in range(5)]
    fake.push(*(json_reply(b"{}") for _ in range(5)))
    for reply, gate in zip(fake.replies, gates, strict=True):
        reply.before_headers = Gate(gate)

    async def send(n: int) -> int:
        headers = {"x-order": str(n)}
        async with client.post(sidecar.url + "/chat/completions", data=CHAT, headers=headers) as r:
            await r.read()
            return r.status

    tasks = []
    for n in range(5):
        tasks.append(asyncio.ensure_future(send(n)))
        await wait_for(lambda n=n: guard.in_use + guard.waiting == n + 1)
    for n, gate in enumerate(gates):
        await wait_for(lambda n=n: len(fake.received) == n + 1)
        assert len(fake.received) == n + 1  # only the slot holder reached the upstream
        gate.set()
    assert await asyncio.gather(*tasks) == [200] * 5
    assert [r.headers["x-order"] for r in fake.received] == ["0", "1", "2", "3", "4"]
    assert sidecar.value("llm_sidecar_guard_wait_seconds_count", **UP) == 5


async def test_guard_rejects_after_max_wait_with_local_429(
    fake_upstream: Upstream, start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(url, max_concurrency=1, guard_max_wait_s=0.2)
    gate = asyncio.Event()
    fake.push(Reply(before_headers=Gate(gate)))
    holder = asyncio.ensure_future(client.post(sidecar.url + "/chat/completions", data=CHAT))
    await wait_for(lambda: len(fake.received) == 1)
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        assert response.status == 429
        assert response.headers["x-sidecar-error"] == "local_rate_limited"
        assert response.headers["Retry-After"] == "1"
        assert orjson.loads(await response.read())["error"]["type"] == "local_rate_limited"
    gate.set()
    (await holder).close()
    assert len(fake.received) == 1
    assert (
        sidecar.requests(
            route="chat_completions",
            model="deepseek-flash",
            stream="false",
            code="429",
            outcome="rejected",
        )
        == 1
    )
    assert sidecar.value("llm_sidecar_guard_wait_seconds_sum", **UP) >= 0.2


# --- retries -----------------------------------------------------------------------------


async def test_retry_honours_retry_after_and_replays_the_body(
    fake_upstream: Upstream, start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(url, retry_max_attempts=3, retry_max_wait_s=5)
    fake.push(
        json_reply(fixture("deepseek-error-429.json"), status=429, **{"retry-after-ms": "300"}),
        json_reply(b"", status=503, **{"retry-after": "0"}),
        json_reply(fixture("deepseek-chat-nonstream.json")),
    )
    body = CHAT + b" " * 1000 + "\u00e9".encode()
    started = monotonic()
    async with client.post(sidecar.url + "/chat/completions", data=body) as response:
        assert response.status == 200
        assert await response.read() == fixture("deepseek-chat-nonstream.json")
    assert monotonic() - started >= 0.3  # never sooner than retry-after-ms
    assert [r.body for r in fake.received] == [body] * 3
    (line,) = sidecar.exchanges()
    assert line["attempts"] == 3 and line["outcome"] == "completed"
    assert sidecar.attempts("429") == 1
    assert sidecar.attempts("503") == 1
    assert sidecar.attempts("200") == 1
    assert (
        sidecar.requests(
            route="chat_completions",
            model="deepseek-chat",
            stream="false",
            code="200",
            outcome="completed",
        )
        == 1
    )
    assert sidecar.value("llm_upstream_concurrency_limit", source="reported", **UP) == 40


async def test_retry_after_beyond_the_budget_relays_the_429_at_once(
    fake_upstream: Upstream, start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(url, retry_max_attempts=5, retry_max_wait_s=1)
    body = fixture("openai-error-429.json")
    fake.push(json_reply(body, status=429, **{"retry-after": "30"}))
    started = monotonic()
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        assert response.status == 429 and await response.read() == body
        assert "x-sidecar-error" not in response.headers
    assert monotonic() - started < 1  # not even the budget was spent waiting
    assert len(fake.received) == 1 and sidecar.exchanges()[0]["attempts"] == 1


async def test_no_retry_once_bytes_reached_the_client(
    fake_upstream: Upstream, start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(url, retry_max_attempts=3, retry_max_wait_s=5)
    head = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'
    fake.push(
        Reply(headers={"Content-Type": "text/event-stream"}, steps=[head, Pause(0.05), ABORT])
    )
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert len(fake.received) == 1
    assert sidecar.exchanges()[0]["outcome"] == "upstream_aborted"


async def test_retry_can_be_turned_off_per_request(
    fake_upstream: Upstream, start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(url, retry_max_attempts=3, retry_max_wait_s=5)
    fake.push(json_reply(fixture("deepseek-error-429.json"), status=429))
    headers = {"x-sidecar-retry": "off"}
    async with client.post(sidecar.url + "/chat/completions", data=CHAT, headers=headers) as r:
        assert r.status == 429
    assert len(fake.received) == 1
    assert "x-sidecar-retry" not in fake.received[0].headers  # addressed to the sidecar only


async def test_connect_errors_are_retried_then_502(
    start_sidecar: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    port = closed_port()
    sidecar = await start_sidecar(
        f"http://127.0.0.1:{port}", retry_max_attempts=3, retry_max_wait_s=0.5
    )
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        assert response.status == 502
    (line,) = sidecar.exchanges()
    assert line["attempts"] == 3 and line["outcome"] == "upstream_unreachable"
    assert sidecar.attempts("error") == 3


async def test_without_retries_a_429_is_one_attempt(
    fake_upstream: Upstream, sidecar: RunningSidecar, client: aiohttp.ClientSession
) -> None:
    fake, _ = fake_upstream
    fake.push(json_reply(fixture("deepseek-error-429.json"), status=429, **{"retry-after": "1"}))
    async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
        assert response.status == 429
    assert len(fake.received) == 1
    assert sidecar.attempts("429") == 1


# --- cost, retirements, configured limits --------------------------------------------------

FLAT_CATALOGUE = """
[models.flat-model]
[[models.flat-model.prices]]
from = 2020-01-01T00:00:00Z
cache_hit = 0.1
cache_miss = 1
output = 2

[aliases]
flat-alias = "flat-model"
"""


async def test_cost_and_savings_are_exact_and_keep_the_alias_label(
    fake_upstream: Upstream,
    start_sidecar: SidecarFactory,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    fake, url = fake_upstream
    sidecar = await start_sidecar(url)
    sidecar.sidecar.catalogue = Catalogue.from_toml(FLAT_CATALOGUE)
    usage = {
        "prompt_tokens": 1_000_000,
        "completion_tokens": 500_000,
        "total_tokens": 1_500_000,
        "prompt_cache_hit_tokens": 800_000,
        "prompt_cache_miss_tokens": 200_000,
    }
    for model in ("flat-alias", "unknown-model"):
        fake.push(json_reply(orjson.dumps({"model": model, "usage": usage})))
        async with client.post(sidecar.url + "/chat/completions", data=CHAT) as response:
            await response.read()
    cost = {"model": "flat-alias", **UP}
    assert sidecar.value("llm_cost_usd_total", type="cache_hit", **cost) == pytest.approx(0.08)
    assert sidecar.value("llm_cost_usd_total", type="cache_miss", **cost) == pytest.approx(0.2)
    assert sidecar.value("llm_cost_usd_total", type="output", **cost) == pytest.approx(1.0)
    assert sidecar.value("llm_cache_savings_usd_total", **cost) == pytest.approx(0.72)
    assert sidecar.value("llm_sidecar_unpriced_requests_total", model="unknown-model", **UP) == 1
    lines = sidecar.exchanges()
    assert lines[0]["cost_usd"] == pytest.approx(1.28) and lines[1]["cost_usd"] is None


async def test_builtin_prices_follow_the_window_in_force_at_the_start() -> None:
    from sidecar.accounting.cost import price_exchange
    from sidecar.exchange import Exchange, Usage

    catalogue = Catalogue.builtin()
    usage = Usage(input=1_000_000, output=1_000_000, cache_hit=0, cache_miss=1_000_000)
    costs = []
    for at in (
        datetime(2026, 11, 30, 3, 59, 59, tzinfo=UTC),
        datetime(2026, 11, 30, 4, tzinfo=UTC),
    ):
        ex = Exchange("r", "POST", "chat_completions", 0.0, at, reported_model="deepseek-flash")
        ex.usage = usage
        price_exchange(ex, catalogue)
        costs.append(ex.cost_usd)
    assert costs == [pytest.approx(0.30 + 1.20), pytest.approx(0.15 + 0.60)]  # peak, then off-peak


async def test_retirements_and_configured_limits_are_exported(
    fake_upstream: Upstream, start_sidecar: SidecarFactory
) -> None:
    _, url = fake_upstream
    sidecar = await start_sidecar(url, limit_rpm=5000, limit_tpm=10_000_000, limit_concurrency=500)
    retired = datetime(2026, 7, 24, 15, 59, tzinfo=UTC).timestamp()
    assert sidecar.value("llm_model_retirement_timestamp_seconds", model="deepseek-chat") == retired
    assert sidecar.value("llm_ratelimit_configured", resource="requests_per_minute", **UP) == 5000
    assert sidecar.value("llm_ratelimit_configured", resource="tokens_per_minute", **UP) == 1e7
    assert sidecar.value("llm_ratelimit_configured", resource="concurrency", **UP) == 500
    assert sidecar.value("llm_upstream_concurrency_limit", source="configured", **UP) == 500


async def test_no_configured_limits_means_no_series(sidecar: RunningSidecar) -> None:
    assert "llm_ratelimit_configured{" not in await sidecar.scrape()


# --- balance and key injection -------------------------------------------------------------


async def test_balance_poller_sets_gauges_with_the_injected_key(
    fake_upstream: Upstream, start_sidecar: SidecarFactory
) -> None:
    fake, url = fake_upstream
    balance = (
        b'{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00",'
        b'"granted_balance":"10.00","topped_up_balance":"100.00"}]}'
    )
    fake.push(json_reply(balance), json_reply(b"oops", status=500))
    sidecar = await start_sidecar(url, api_key="sk-balance-key", balance_poll_s=0.1)
    await wait_for(
        lambda: sidecar.value("llm_sidecar_balance_poll_failures_total", reason="status", **UP) >= 1
    )
    assert sidecar.value("llm_account_balance", currency="CNY", **UP) == 110.0
    assert sidecar.value("llm_account_available", **UP) == 1
    assert fake.received[0].path_qs == "/user/balance"
    assert fake.received[0].headers["Authorization"] == "Bearer sk-balance-key"
    assert b"sk-balance-key" not in sidecar.log.getvalue()
