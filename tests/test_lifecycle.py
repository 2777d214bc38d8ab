"""The real process: startup line, admin endpoints, SIGTERM drain, exit codes."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from tests.fake_upstream import FakeUpstream, Gate, Reply

CHAT = b'{"model":"deepseek-flash","stream":true}'


@dataclass
class Process:
    proc: asyncio.subprocess.Process
    proxy: str
    admin: str
    lines: list[dict[str, Any]]

    async def next_line(self, event: str, timeout: float = 10) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            assert raw, f"process ended before {event!r}"
            line = orjson.loads(raw)
            self.lines.append(line)
            if line["event"] == event:
                return line


async def start_process(url: str, shutdown_timeout_s: float) -> Process:
    argv = ["run", "--upstream", url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", *argv, "--shutdown-timeout", str(shutdown_timeout_s),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    process = Process(proc, "", "", [])
    startup = await process.next_line("startup")
    process.proxy = f"http://127.0.0.1:{startup['proxy_port']}"
    process.admin = f"http://127.0.0.1:{startup['admin_port']}"
    return process


@pytest.fixture
async def sidecar_process(fake_upstream: tuple[FakeUpstream, str]) -> AsyncIterator[Process]:
    process = await start_process(fake_upstream[1], shutdown_timeout_s=5)
    yield process
    if process.proc.returncode is None:
        process.proc.kill()
        await process.proc.wait()


async def test_startup_line_masks_secrets_and_admin_answers(sidecar_process: Process) -> None:
    startup = sidecar_process.lines[0]
    assert startup["settings"]["api_key"] is None
    assert startup["level"] == "info"
    async with aiohttp.ClientSession() as client:
        for path in ("/healthz", "/readyz"):
            async with client.get(sidecar_process.admin + path) as response:
                assert response.status == 200
        async with client.get(sidecar_process.admin + "/metrics") as response:
            text = await response.text()
        assert 'llm_sidecar_build_info{python="' in text
        # the proxy port serves nothing of its own: /metrics there belongs to the upstream
        async with client.get(sidecar_process.proxy + "/metrics") as response:
            assert await response.read() == b'{"ok":true}'


async def test_sigterm_drains_in_flight_streams_then_exits_zero(
    fake_upstream: tuple[FakeUpstream, str], sidecar_process: Process
) -> None:
    fake, _ = fake_upstream
    gate = asyncio.Event()
    first = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    last = b"data: [DONE]\n\n"
    fake.push(Reply(headers={"Content-Type": "text/event-stream"}, steps=[first, Gate(gate), last]))
    async with aiohttp.ClientSession() as client:
        response = await client.post(sidecar_process.proxy + "/chat/completions", data=CHAT)
        assert await response.content.readexactly(len(first)) == first
        sidecar_process.proc.send_signal(signal.SIGTERM)
        await sidecar_process.next_line("draining")
        async with client.get(sidecar_process.admin + "/readyz") as ready:
            assert ready.status == 503
        with pytest.raises(aiohttp.ClientConnectorError):
            async with aiohttp.ClientSession() as fresh:
                await fresh.get(sidecar_process.proxy + "/models")
        gate.set()
        assert await response.read() == last  # the in-flight stream ends cleanly
        response.close()
    exchange = await sidecar_process.next_line("exchange")
    assert exchange["outcome"] == "completed"
    assert await asyncio.wait_for(sidecar_process.proc.wait(), 10) == 0


async def test_sigint_with_nothing_in_flight_exits_zero_quickly(sidecar_process: Process) -> None:
    sidecar_process.proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(sidecar_process.proc.wait(), 5) == 0
    assert sidecar_process.proc.stderr is not None
    assert b"Traceback" not in await sidecar_process.proc.stderr.read()


async def test_streams_longer_than_the_shutdown_timeout_are_cut_not_ended(
    fake_upstream: tuple[FakeUpstream, str],
) -> None:
    fake, url = fake_upstream
    process = await start_process(url, shutdown_timeout_s=1)
    first = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    steps = [first, Gate(asyncio.Event())]
    fake.push(Reply(headers={"Content-Type": "text/event-stream"}, steps=steps))
    async with aiohttp.ClientSession() as client:
        response = await client.post(process.proxy + "/chat/completions", data=CHAT)
        assert await response.content.readexactly(len(first)) == first
        process.proc.send_signal(signal.SIGTERM)
        with pytest.raises(aiohttp.ClientPayloadError):  # broken, never a clean end
            await response.read()
        response.close()
    assert await asyncio.wait_for(process.proc.wait(), 10) == 0
