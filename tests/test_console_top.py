"""``top --once`` as a user runs it: against hand-made /metrics, and against sidecar + simulator."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from sidecar.simulator import build_app
from sidecar.simulator.testing import fast_scenario

ROOT = Path(__file__).resolve().parent.parent

LABELS = 'upstream="deepseek",route="chat_completions"'
METRICS = (
    "# TYPE llm_requests_total counter\n"
    f'llm_requests_total{{{LABELS},model="deepseek-flash",stream="true",code="200",'
    'outcome="completed"} 7\n'
    "# TYPE llm_in_flight_requests gauge\n"
    f"llm_in_flight_requests{{{LABELS}}} 2\n"
)


async def run_cli(*args: str, timeout: float = 40.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode()


async def test_top_once_sums_urls(aiohttp_server: Any) -> None:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=METRICS, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    server: TestServer = await aiohttp_server(app)
    url = str(server.make_url("/metrics"))
    code, out = await run_cli("top", "--once", "--interval", "0.1", "--metrics-url", url, url)
    assert code == 0, out
    assert "deepseek-flash" in out
    assert "requests 14" in out and "in flight 4" in out


async def test_top_once_unreachable_exits_1() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    code, out = await run_cli("top", "--once", "--interval", "0.1", "--metrics-url", url)
    assert code == 1 and "unreachable" in out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ok(session: ClientSession, url: str) -> None:
    for _ in range(200):
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never became ready")


async def test_top_once_against_sidecar_and_simulator(aiohttp_server: Any) -> None:
    sim: TestServer = await aiohttp_server(build_app(fast_scenario(), 5))
    proxy_port, admin_port = free_port(), free_port()
    sidecar = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "run", "--upstream", str(sim.make_url("")).rstrip("/"),
        "--listen", f"127.0.0.1:{proxy_port}", "--admin-listen", f"127.0.0.1:{admin_port}",
        "--limit-concurrency", "9", cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with ClientSession() as session:
            await wait_ok(session, f"http://127.0.0.1:{admin_port}/readyz")
            body = {
                "model": "deepseek-flash",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            }
            for _ in range(3):
                async with session.post(
                    f"http://127.0.0.1:{proxy_port}/chat/completions",
                    data=orjson.dumps(body),
                    headers={"Authorization": "Bearer sk-top"},
                ) as resp:
                    assert resp.status == 200
                    await resp.read()
        metrics = f"http://127.0.0.1:{admin_port}/metrics"
        code, out = await run_cli("top", "--once", "--interval", "0.2", "--metrics-url", metrics)
    finally:
        sidecar.terminate()
        await asyncio.wait_for(sidecar.wait(), 20)
    assert code == 0, out
    assert "deepseek-flash" in out
    assert re.search(r"requests 3\b", out), out
