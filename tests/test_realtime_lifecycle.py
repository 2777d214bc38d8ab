"""Realtime sessions in the real process: SIGTERM drains them, then cuts what outlives it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.fake_realtime import RESPONSE, SESSION_CREATED, FakeRealtime
from tests.test_lifecycle import Process, start_process

PATH = "/v1/realtime?model=gpt-realtime"


@asynccontextmanager
async def sidecar_process(url: str, shutdown_timeout_s: float) -> AsyncIterator[Process]:
    """The sidecar as a child process, killed if a test leaves it running."""
    process = await start_process(url, shutdown_timeout_s)
    try:
        yield process
    finally:
        if process.proc.returncode is None:
            process.proc.kill()
            await process.proc.wait()


async def test_sigterm_drains_a_session_in_both_directions(
    realtime_upstream: tuple[FakeRealtime, str],
) -> None:
    async with sidecar_process(realtime_upstream[1], 5) as process:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(process.proxy + PATH) as ws,
        ):
            assert await ws.receive_str() == SESSION_CREATED
            process.proc.send_signal(signal.SIGTERM)
            await process.next_line("draining")
            with pytest.raises(aiohttp.ClientConnectorError):  # the listener is gone...
                async with aiohttp.ClientSession() as fresh:
                    await fresh.get(process.proxy + "/models")
            await asyncio.sleep(0.2)
            await ws.send_str('{"type":"response.create"}')  # ...yet the session still flows
            for text in RESPONSE:
                assert await ws.receive_str() == text
            await ws.close()
        exchange = await process.next_line("exchange")
        assert (exchange["outcome"], exchange["output_tokens"]) == ("completed", 30)
        assert await asyncio.wait_for(process.proc.wait(), 10) == 0


async def test_sessions_outliving_the_shutdown_timeout_are_aborted_not_closed(
    realtime_upstream: tuple[FakeRealtime, str],
) -> None:
    fake, url = realtime_upstream
    async with sidecar_process(url, 0.5) as process:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(process.proxy + PATH) as ws,
        ):
            assert await ws.receive_str() == SESSION_CREATED
            process.proc.send_signal(signal.SIGTERM)
            message = await asyncio.wait_for(ws.receive(), 10)
            assert message.type in (WSMsgType.CLOSED, WSMsgType.ERROR)
            assert ws.close_code == 1006  # no close frame the upstream did not send
        await asyncio.wait_for(fake.ended.wait(), 5)
        assert fake.close_codes[0] in (None, 1006)
        exchange = await process.next_line("exchange")
        assert exchange["outcome"] == "client_disconnected"
        assert await asyncio.wait_for(process.proc.wait(), 10) == 0
