"""Open files: the soft limit is raised at start, 800 streams fit under ``ulimit -Sn 1024``,
and running out of descriptors is a clean, counted, rate-logged failure that recovers."""

from __future__ import annotations

import asyncio
import resource
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sidecar.relay.descriptors import (
    MAX_OPEN_FILES,
    ExhaustionReport,
    is_exhaustion,
    needed_for,
    raise_open_files_limit,
)

CHUNKS = [b'data: {"choices":[{"delta":{"content":"%d"}}]}\n\n' % i for i in range(5)]
BODY = b"".join(CHUNKS) + b"data: [DONE]\n\n"
CHAT = b'{"model":"deepseek-flash","stream":true}'


def raise_own_limit() -> None:
    """The test process holds both ends of every stream: give it the room the sidecar gets."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class GatedUpstream:
    """Streams start at once and finish when ``release`` is set: all of them are open together."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(CHUNKS[0])
        self.started += 1
        await self.release.wait()
        for chunk in CHUNKS[1:]:
            await response.write(chunk)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@pytest.fixture
async def gated() -> AsyncIterator[tuple[GatedUpstream, str]]:
    raise_own_limit()
    upstream = GatedUpstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield upstream, str(server.make_url("")).rstrip("/")
    await server.close()


@dataclass
class Process:
    proc: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    proxy: str = ""
    admin: str = ""
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        """Keep stdout drained: a full pipe would stall the sidecar's log writes."""
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(orjson.loads(raw))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["event"] == name]

    async def metric(self, name: str) -> float:
        async with aiohttp.ClientSession() as client, client.get(self.admin + "/metrics") as r:
            text = await r.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def limit_to(soft: int, hard: int | None = None) -> Callable[[], None]:
    def apply() -> None:
        _, current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, current_hard if hard is None else hard))

    return apply


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Any]]:
    processes: list[Process] = []

    async def run(upstream: str, preexec: Callable[[], None], *flags: str) -> Process:
        argv = ["run", "--upstream", upstream, "--listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0", "--shutdown-timeout", "2", *flags]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sidecar", *argv, preexec_fn=preexec,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        process = Process(proc)
        processes.append(process)
        process.reader = asyncio.create_task(process._read())
        for _ in range(200):
            if process.events("startup"):
                break
            assert proc.returncode is None, await proc.stderr.read()  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
        startup = process.events("startup")[0]
        process.proxy = f"http://127.0.0.1:{startup['proxy_port']}"
        process.admin = f"http://127.0.0.1:{startup['admin_port']}"
        return process

    yield run
    for process in processes:
        if process.proc.returncode is None:
            process.proc.kill()
            await process.proc.wait()
        if process.reader is not None:
            await process.reader


async def stream(client: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    """Status, body and sidecar error type; status 0 when the connection itself failed."""
    try:
        async with client.post(url + "/chat/completions", data=CHAT) as response:
            body = await response.read()
            return response.status, body, response.headers.get("x-sidecar-error", "")
    except aiohttp.ClientError as exc:
        return 0, b"", type(exc).__name__


def test_the_soft_limit_is_raised_to_the_hard_one_within_a_bound() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = raise_open_files_limit()
    expected = min(hard, MAX_OPEN_FILES) if hard != resource.RLIM_INFINITY else MAX_OPEN_FILES
    assert limit.soft == max(expected, soft) and limit.raised_from == soft
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == limit.soft
    assert limit.enough_for(100) == (limit.soft >= needed_for(100) == 264)


def test_exhaustion_is_recognised_through_aiohttp_wrapping() -> None:
    emfile = OSError(24, "Too many open files")
    wrapped = aiohttp.ClientConnectorError(aiohttp.client_reqrep.ConnectionKey(
        "h", 1, False, True, None, None, None), emfile)  # fmt: skip
    assert is_exhaustion(emfile) and is_exhaustion(wrapped)
    assert not is_exhaustion(ConnectionRefusedError(111, "refused")) and not is_exhaustion(None)


def test_exhaustion_is_counted_every_time_and_logged_at_most_once_a_second() -> None:
    counted: list[int] = []
    logged: list[dict[str, Any]] = []

    class Log:
        def warning(self, event: str, **fields: Any) -> None:
            logged.append({"event": event, **fields})

    now = [0.0]
    report = ExhaustionReport(lambda: counted.append(1), Log(), clock=lambda: now[0])
    for step in range(30):  # 30 failures over 2.9 s
        now[0] = step * 0.1
        report.failed("connect")
    assert len(counted) == 30
    assert [line["failures"] for line in logged] == [1, 10, 10]


async def test_800_streams_under_a_soft_limit_of_1024_arrive_byte_exact(
    gated: tuple[GatedUpstream, str], start: Callable[..., Any]
) -> None:
    upstream, url = gated
    sidecar = await start(url, limit_to(1024))
    assert sidecar.events("startup")[0]["open_files_limit"] > 1024
    assert not sidecar.events("open_files_limit_low")
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as client:
        tasks = [asyncio.create_task(stream(client, sidecar.proxy)) for _ in range(800)]
        for _ in range(600):  # every stream open at the same time before any may finish
            if upstream.started == 800:
                break
            await asyncio.sleep(0.05)
        assert upstream.started == 800
        upstream.release.set()
        results = await asyncio.gather(*tasks)
    assert all(result == (200, BODY, "") for result in results)
    assert await sidecar.metric("llm_requests_total{") == 800
    assert await sidecar.metric("llm_sidecar_fd_exhausted_total") == 0
    assert await sidecar.metric("process_max_fds") > 1024


async def test_a_hard_limit_too_low_fails_cleanly_counts_and_recovers(
    gated: tuple[GatedUpstream, str], start: Callable[..., Any]
) -> None:
    upstream, url = gated
    # 100 descriptors: room for the listeners and a few dozen streams, not for 100.
    sidecar = await start(url, limit_to(100, 100), "--limit-concurrency", "100")
    (warning,) = sidecar.events("open_files_limit_low")
    assert warning["open_files_limit"] == 100 and warning["needed"] == 264
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        tasks = [asyncio.create_task(stream(client, sidecar.proxy)) for _ in range(100)]
        await asyncio.sleep(3)  # the sidecar accepts what it can; the rest fail or wait
        assert sidecar.proc.returncode is None
        upstream.release.set()
        results = await asyncio.gather(*tasks)
        ok = [r for r in results if r == (200, BODY, "")]
        refused = [r for r in results if r[2] == "upstream_unreachable"]
        # A connection the sidecar could not accept is closed by the event loop (libuv closes
        # what waits in the backlog when accept() finds no descriptor): the client sees a reset.
        reset = [r for r in results if r[0] == 0]
        assert refused and len(ok) + len(refused) + len(reset) == 100
        status, body, _ = refused[0]
        error = orjson.loads(body)["error"]
        assert status == 502 and "ran out of file descriptors" in error["message"]
    # Recovery: once the clients' idle keep-alive connections are gone, descriptors are free
    # again and a new stream goes through.
    async with aiohttp.ClientSession(timeout=timeout) as client:
        for _ in range(50):
            if await stream(client, sidecar.proxy) == (200, BODY, ""):
                break
            await asyncio.sleep(0.1)
        assert await stream(client, sidecar.proxy) == (200, BODY, "")
    exhausted = await sidecar.metric("llm_sidecar_fd_exhausted_total")
    assert exhausted >= len(refused)
    lines = sidecar.events("fd_exhausted")
    assert 1 <= len(lines) <= 6 < exhausted  # about one a second over the test, not one each
    assert sum(line["failures"] for line in lines) <= exhausted
