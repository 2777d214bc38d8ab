"""Balance parsing, and the poller over a real socket against a fake /user/balance."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sidecar.accounting.balance import BalancePoller, BalanceReport, parse_balance

GOOD = (
    b'{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00",'
    b'"granted_balance":"10.00","topped_up_balance":"100.00"}]}'
)
KEY = "sk-test-0123456789abcdef"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (GOOD, BalanceReport(True, {"CNY": 110.0})),
        (
            b'{"is_available":false,"balance_infos":[{"currency":"USD","total_balance":"0.5"},'
            b'{"currency":"CNY","total_balance":3}],"extra":1}',
            BalanceReport(False, {"USD": 0.5, "CNY": 3.0}),
        ),
        (b'{"is_available":true,"balance_infos":[]}', BalanceReport(True, {})),
    ],
)
def test_parse_good_bodies(body: bytes, expected: BalanceReport) -> None:
    assert parse_balance(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"garbage",
        b"[]",
        b'{"balance_infos":[]}',
        b'{"is_available":"yes","balance_infos":[]}',
        b'{"is_available":true}',
        b'{"is_available":true,"balance_infos":{}}',
        b'{"is_available":true,"balance_infos":["CNY"]}',
        b'{"is_available":true,"balance_infos":[{"currency":"CNY"}]}',
        b'{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"lots"}]}',
        b'{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"NaN"}]}',
        b'{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":true}]}',
        b'{"is_available":true,"balance_infos":[{"currency":"yuan!","total_balance":"1"}]}',
        b'{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"1"},'
        b'{"currency":"CNY","total_balance":"2"}]}',
    ],
)
def test_parse_garbage(body: bytes) -> None:
    assert parse_balance(body) is None


class Recorder:
    """Collects callback calls and wakes the test once enough have arrived."""

    def __init__(self) -> None:
        self.events: list[BalanceReport | str] = []
        self._changed = asyncio.Event()

    def report(self, report: BalanceReport) -> None:
        self.events.append(report)
        self._changed.set()

    def failure(self, reason: str) -> None:
        self.events.append(reason)
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        while len(self.events) < count:
            self._changed.clear()
            await self._changed.wait()


Reply = Callable[[web.Request], web.StreamResponse]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client


async def fake_upstream(
    aiohttp_server: Callable[..., object], replies: list[Reply], seen: list[str]
) -> TestServer:
    async def balance(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        return reply(request)

    app = web.Application()
    app.router.add_get("/user/balance", balance)
    server = await aiohttp_server(app)  # type: ignore[misc]
    assert isinstance(server, TestServer)
    return server


def ok(body: bytes = GOOD) -> Reply:
    return lambda _: web.Response(body=body, content_type="application/json")


def gzipped() -> Reply:
    return lambda _: web.Response(
        body=gzip.compress(GOOD),
        headers={"Content-Encoding": "gzip"},
        content_type="application/json",
    )


def status(code: int) -> Reply:
    return lambda _: web.Response(status=code, text=f'{{"error":"{KEY}"}}')


async def test_poller_reports_each_result_and_keeps_going(
    aiohttp_server: Callable[..., object],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    replies = [ok(), status(500), ok(b"garbage"), gzipped(), status(302), ok()]
    server = await fake_upstream(aiohttp_server, replies, seen)
    recorder = Recorder()
    poller = BalancePoller(
        session, str(server.make_url("/user/balance")), KEY, 0.01, recorder.report, recorder.failure
    )
    poller.start()
    await recorder.wait_for(6)
    await poller.stop()
    good = BalanceReport(True, {"CNY": 110.0})
    assert recorder.events[:6] == [good, "status", "body", good, "status", good]
    assert set(seen) == {f"Bearer {KEY}"}
    assert KEY not in caplog.text
    assert KEY not in repr(poller)
    count = len(recorder.events)
    await asyncio.sleep(0.05)
    assert len(recorder.events) == count  # stopped means stopped


async def test_poller_times_out(
    aiohttp_server: Callable[..., object], session: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(body=GOOD)

    app = web.Application()
    app.router.add_get("/user/balance", slow)
    server = await aiohttp_server(app)  # type: ignore[misc]
    recorder = Recorder()
    poller = BalancePoller(
        session,
        str(server.make_url("/user/balance")),
        KEY,
        10.0,
        recorder.report,
        recorder.failure,
        timeout_s=0.05,
    )
    await poller.poll_once()
    release.set()
    assert recorder.events == ["timeout"]


async def test_poller_cannot_connect(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as sock:  # a port that was free a moment ago and now refuses
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    recorder = Recorder()
    poller = BalancePoller(
        session,
        f"http://127.0.0.1:{port}/user/balance",
        KEY,
        0.01,
        recorder.report,
        recorder.failure,
    )
    poller.start()
    await recorder.wait_for(2)
    await poller.stop()
    assert recorder.events[:2] == ["connect", "connect"]
    assert KEY not in caplog.text


async def test_a_raising_callback_does_not_stop_the_loop(
    aiohttp_server: Callable[..., object],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await fake_upstream(aiohttp_server, [ok()], [])
    calls = asyncio.Queue[BalanceReport]()

    def explode(report: BalanceReport) -> None:
        calls.put_nowait(report)
        raise RuntimeError("metrics broke")

    poller = BalancePoller(
        session, str(server.make_url("/user/balance")), KEY, 0.01, explode, lambda _: None
    )
    poller.start()
    for _ in range(3):
        await calls.get()
    await poller.stop()
    assert "balance callback failed" in caplog.text


@pytest.mark.parametrize(
    ("key", "interval_s"), [("", 1.0), ("sk two", 1.0), ("sk\nx", 1.0), ("sk", 0.0)]
)
async def test_bad_arguments_never_echo_the_key(
    session: aiohttp.ClientSession, key: str, interval_s: float
) -> None:
    with pytest.raises(ValueError) as caught:
        BalancePoller(session, "http://x/", key, interval_s, lambda _: None, lambda _: None)
    assert not key or key not in str(caught.value)
