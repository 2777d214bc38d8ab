"""Realtime (WebSocket) sessions: what the sidecar costs per frame, next to no proxy at all.

    .venv/bin/python bench/realtime.py [--sessions 200] [--rounds 100] [--latency-rounds 2000]

Three processes on loopback: this one (aiohttp WebSocket clients on uvloop), an upstream
(``--role upstream``: aiohttp ``WebSocketResponse`` on uvloop, answering each client event
with a ``response.output_text.delta`` of the same size), and the sidecar as shipped
(``python -m sidecar run``). Each phase runs once straight to the upstream and once through
the sidecar:

* load: ``--sessions`` sessions open at once, each sending ``--rounds`` events and waiting
  for each answer. CPU is read from /proc after every session is connected and before any
  closes, so handshakes are not counted: CPU per frame = process CPU / frames relayed (two
  per round, one each way). The upstream's CPU per frame (it parses and frames every
  message) is the reference of the ratio.
* latency: one session, ``--latency-rounds`` round trips one after the other; the added
  latency per frame is (round trip through the sidecar - direct) / 2, since a round trip
  crosses the sidecar twice.

Every answer is checked byte for byte; the exit status is 1 if one was wrong or missing.
Bounded: a few tens of seconds with the defaults, well under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
import uvloop
from aiohttp import web

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
PATH = "/v1/realtime?model=bench-realtime"
WARM_UP = 20  # sessions, before any measurement
FILLER = "x" * 64  # a short text delta: the frame size realtime text sessions mostly carry


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (every thread), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def event(kind: str, seq: str) -> str:
    return orjson.dumps({"type": kind, "event_id": seq, "delta": FILLER}).decode()


async def upstream_session(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    await ws.send_str('{"type":"session.created","session":{"model":"bench-realtime"}}')
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            seq = orjson.loads(message.data)["event_id"]
            await ws.send_str(event("response.output_text.delta", seq))
    return ws


async def serve_upstream() -> None:
    app = web.Application()
    app.router.add_get("/v1/realtime", upstream_session)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("PORT", runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


class Session:
    """One client session; counts wrong or missing answers."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
        self.ws, self.name, self.errors = ws, name, 0

    async def rounds(self, count: int, rtts: list[float]) -> None:
        for i in range(count):
            seq = f"{self.name}-{i}"
            kind = "response.create" if i == 0 else "input_text.append"
            started = time.perf_counter()
            await self.ws.send_str(event(kind, seq))
            answer = await self.ws.receive_str()
            rtts.append(time.perf_counter() - started)
            self.errors += answer != event("response.output_text.delta", seq)


async def open_sessions(http: aiohttp.ClientSession, base: str, count: int) -> list[Session]:
    async def one(n: int) -> Session:
        ws = await http.ws_connect(base + PATH, compress=0, max_msg_size=0)
        await ws.receive_str()  # session.created
        return Session(ws, f"s{n}")

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def phase(base: str, pid: int, sessions: int, rounds: int) -> dict[str, float]:
    """Open every session, then measure CPU and round trips while they exchange events."""
    connector = aiohttp.TCPConnector(limit=0)  # the default cap of 100 would queue sessions
    async with aiohttp.ClientSession(connector=connector) as http:
        opened = await open_sessions(http, base, sessions)
        rtts: list[float] = []
        cpu_before, started = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(s.rounds(rounds, rtts) for s in opened))
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu_before
        for s in opened:
            await s.ws.close()
    frames = 2 * sessions * rounds
    return {
        "cpu_us_per_frame": cpu / frames * 1e6,
        "frames_per_s": frames / elapsed,
        "rtt_p50_ms": statistics.median(rtts) * 1e3,
        "rtt_p99_ms": statistics.quantiles(rtts, n=100)[98] * 1e3,
        "errors": sum(s.errors for s in opened) + frames // 2 - len(rtts),
    }


async def latency(base: str, rounds: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as http:
        (session,) = await open_sessions(http, base, 1)
        rtts: list[float] = []
        await session.rounds(rounds, rtts)
        await session.ws.close()
    return {
        "rtt_p50_ms": statistics.median(rtts) * 1e3,
        "rtt_p99_ms": statistics.quantiles(rtts, n=100)[98] * 1e3,
        "errors": session.errors,
    }


def spawn(args: list[str], out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen([sys.executable, *args], stdout=sink, stderr=subprocess.STDOUT)


async def wait_for(path: Path, needle: str, timeout_s: float = 20) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if needle in line:
                return line
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{needle!r} never appeared in {path}:\n{path.read_text()[-2000:]}")


async def run(args: argparse.Namespace, tmp: Path) -> int:
    upstream = spawn([__file__, "--role", "upstream"], tmp / "upstream.log")
    up_port = (await wait_for(tmp / "upstream.log", "PORT")).split()[1]
    sidecar = spawn(
        ["-m", "sidecar", "run", "--upstream", f"http://127.0.0.1:{up_port}",
         "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        tmp / "sidecar.log",
    )  # fmt: skip
    try:
        startup = orjson.loads(await wait_for(tmp / "sidecar.log", '"startup"'))
        direct = f"http://127.0.0.1:{up_port}"
        proxied = f"http://127.0.0.1:{startup['proxy_port']}"
        for base in (direct, proxied):  # warm-up: imports, code paths, connection setup
            await phase(base, upstream.pid, WARM_UP, 20)
        results = {
            "direct": await phase(direct, upstream.pid, args.sessions, args.rounds),
            "sidecar": await phase(proxied, sidecar.pid, args.sessions, args.rounds),
            "direct_latency": await latency(direct, args.latency_rounds),
            "sidecar_latency": await latency(proxied, args.latency_rounds),
        }
    finally:
        for proc in (sidecar, upstream):
            proc.terminate()
            proc.wait(10)
    report(results, args)
    lines = (tmp / "sidecar.log").read_text().count('"route":"realtime"')
    expected = WARM_UP + args.sessions + 1
    print(f"sidecar exchange lines for realtime sessions: {lines} (expected {expected})")
    return 1 if lines != expected or any(r["errors"] for r in results.values()) else 0


def report(r: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    d, s, dl, sl = r["direct"], r["sidecar"], r["direct_latency"], r["sidecar_latency"]
    added = (sl["rtt_p50_ms"] - dl["rtt_p50_ms"]) / 2
    print(
        f"{args.sessions} sessions x {args.rounds} round trips; latency: 1 x {args.latency_rounds}"
    )
    rows = [
        ("CPU us per frame (sidecar / upstream)", s["cpu_us_per_frame"], d["cpu_us_per_frame"]),
        ("frames/s at load (via sidecar / direct)", s["frames_per_s"], d["frames_per_s"]),
        ("round trip p50 ms at load (via / direct)", s["rtt_p50_ms"], d["rtt_p50_ms"]),
        ("round trip p99 ms at load (via / direct)", s["rtt_p99_ms"], d["rtt_p99_ms"]),
        ("round trip p50 ms, one session (via / direct)", sl["rtt_p50_ms"], dl["rtt_p50_ms"]),
        ("round trip p99 ms, one session (via / direct)", sl["rtt_p99_ms"], dl["rtt_p99_ms"]),
    ]
    for name, a, b in rows:
        ratio = f"{a / b:5.2f}x" if b else "  n/a"
        print(f"  {name:48} {a:10.3f} {b:10.3f}   ratio {ratio}")
    print(f"  added latency per frame, p50 (one way)          {added * 1000:10.1f} us")
    print(f"  wrong or missing answers: {sum(int(x['errors']) for x in r.values())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("bench", "upstream"), default="bench")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--latency-rounds", type=int, default=2000)
    args = parser.parse_args()
    if args.role == "upstream":
        uvloop.run(serve_upstream())
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as tmp:
        return uvloop.run(run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
