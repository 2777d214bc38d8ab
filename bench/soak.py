"""Soak: many mixed exchanges through one sidecar process, looking for leaks and miscounts.

``python bench/soak.py [--exchanges 200000] [--concurrency 64]`` starts the bench upstream
(``bench/upstream.py``) and a sidecar, then drives a mix of JSON answers, streams, 429s,
upstream aborts, garbage answers (502), idle timeouts and clients that leave mid-stream, at
bounded concurrency. It prints, as JSON:

- the sidecar's RSS (``/proc/PID/status`` VmRSS) after the first 10 % and at the end;
- open file descriptors (``/proc/PID/fd``) and asyncio tasks at idle before the load and
  after it, once the upstream pool's idle connections expired;
- ``llm_requests_total`` (scraped from the admin port) by code and outcome, the exchange log
  lines (read from the sidecar's stdout) by code and outcome, and what the clients saw.

Tasks cannot be seen from outside the process, and the sidecar has no endpoint for them on
purpose, so the sidecar runs here through ``soak.py sidecar ARGS``: the ``run`` command's own
settings and ``serve()``, plus a SIGUSR1 handler that prints ``TASKS n`` on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path
from time import monotonic
from typing import Any

import aiohttp
import orjson
import uvloop

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from payloads import ECHO_FAULT_HEADER, ECHO_STATUS_HEADER, echo_request
from procstat import status_kib

ROOT = Path(__file__).resolve().parent.parent
IDLE_TIMEOUT_S = 1  # below the bench upstream's stall (3 s): a stall ends as upstream_timeout
# kind: (weight, status asked of the upstream, stream, fault)
MIX: dict[str, tuple[int, int, bool, str]] = {
    "json": (40, 200, False, ""),
    "stream": (30, 200, True, ""),
    "429": (10, 429, False, ""),
    "abort": (5, 200, False, "abort"),
    "abort-stream": (4, 200, True, "abort"),
    "client-leaves": (5, 200, True, "slow"),
    "garbage": (5, 200, False, "garbage"),
    "timeout": (1, 200, True, "stall"),
}


# --- the sidecar, with a task probe -----------------------------------------------------------


def run_sidecar(argv: list[str]) -> None:
    """``deepseek-sidecar run ARGS`` plus ``SIGUSR1`` → ``TASKS n`` on stderr."""
    from sidecar.app import serve
    from sidecar.cli.run import load_catalogue, settings_from

    settings = settings_from(argv, os.environ)

    async def probed() -> None:
        def report() -> None:
            print(f"TASKS {len(asyncio.all_tasks())}", file=sys.stderr, flush=True)

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, report)
        await serve(settings, load_catalogue(settings))

    uvloop.run(probed())


# --- the load ---------------------------------------------------------------------------------


class Soak:
    def __init__(self, proxy: str, total: int, concurrency: int, seed: int) -> None:
        self.proxy = proxy
        self.total = total
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        kinds = list(MIX)
        self.kinds = self.rng.choices(kinds, [MIX[k][0] for k in kinds], k=total)
        self.next = 0
        self.done = 0
        self.seen: Counter[str] = Counter()  # "200 complete", "200 broken", "200 left", ...
        self.milestones: dict[int, asyncio.Event] = {}

    def at(self, count: int) -> asyncio.Event:
        return self.milestones.setdefault(count, asyncio.Event())

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            await asyncio.gather(*(self.worker(http) for _ in range(self.concurrency)))

    async def worker(self, http: aiohttp.ClientSession) -> None:
        while self.next < self.total:
            kind = self.kinds[self.next]
            self.next += 1
            self.seen[await self.one(http, kind)] += 1
            self.done += 1
            event = self.milestones.get(self.done)
            if event is not None:
                event.set()

    async def one(self, http: aiohttp.ClientSession, kind: str) -> str:
        _, status, stream, fault = MIX[kind]
        headers = {ECHO_STATUS_HEADER: str(status), "Content-Type": "application/json"}
        if fault:
            headers[ECHO_FAULT_HEADER] = fault
        body = echo_request("deepseek-chat", stream)
        async with http.post(
            self.proxy + "/v1/chat/completions", data=body, headers=headers
        ) as response:
            if kind == "client-leaves":
                await response.content.readany()
                response.close()  # mid-stream: the sidecar must notice and let go
                return f"{response.status} left"
            try:
                await response.read()
            except aiohttp.ClientPayloadError:
                return f"{response.status} broken"
            return f"{response.status} complete"


# --- measuring the sidecar --------------------------------------------------------------------


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def tasks(proc: asyncio.subprocess.Process, lines: asyncio.Queue[int]) -> int:
    proc.send_signal(signal.SIGUSR1)
    return await asyncio.wait_for(lines.get(), 10)


async def read_stderr(proc: asyncio.subprocess.Process, out: asyncio.Queue[int]) -> None:
    assert proc.stderr is not None
    async for line in proc.stderr:
        if line.startswith(b"TASKS "):
            out.put_nowait(int(line.split()[1]))
        else:
            sys.stderr.write(line.decode(errors="replace"))


async def read_log(proc: asyncio.subprocess.Process, tally: Counter[str]) -> None:
    """Count exchange lines by code and outcome as the sidecar writes them."""
    assert proc.stdout is not None
    async for line in proc.stdout:
        if b'"event":"exchange"' in line:
            record = orjson.loads(line)
            tally[f"{record['code']} {record['outcome']}"] += 1


async def scrape(admin: str) -> Counter[str]:
    """``llm_requests_total`` by code and outcome, from the admin port."""
    out: Counter[str] = Counter()
    async with aiohttp.ClientSession() as http, http.get(admin + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("llm_requests_total{"):
            labels = dict(
                pair.split("=", 1)
                for pair in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            value = float(line.rsplit(" ", 1)[1])
            if value:
                out[f"{labels['code'].strip(chr(34))} {labels['outcome'].strip(chr(34))}"] += int(
                    value
                )
    return out


async def settle_fds(pid: int, baseline: int, limit_s: float) -> tuple[int, float]:
    """Wait (bounded) until the fd count is back to ``baseline``: the upstream pool closes idle
    connections on its own schedule. Returns (count, seconds waited)."""
    started = monotonic()
    count = fds(pid)
    while count > baseline and monotonic() - started < limit_s:
        await asyncio.sleep(0.5)
        count = fds(pid)
    return count, round(monotonic() - started, 1)


async def spawn_upstream() -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench/upstream.py"), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    return proc, int(line.split()[1])


async def wait_listening(port: int, limit_s: float = 20) -> None:
    deadline = monotonic() + limit_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            writer.close()
            return


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    upstream, upstream_port = await spawn_upstream()
    proxy_port, admin_port = free_port(), free_port()
    sidecar = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "sidecar",
        f"--upstream=http://127.0.0.1:{upstream_port}",
        f"--listen=127.0.0.1:{proxy_port}",
        f"--admin-listen=127.0.0.1:{admin_port}",
        f"--idle-timeout={IDLE_TIMEOUT_S}",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    log: Counter[str] = Counter()
    task_counts: asyncio.Queue[int] = asyncio.Queue()
    readers = [
        asyncio.ensure_future(read_log(sidecar, log)),
        asyncio.ensure_future(read_stderr(sidecar, task_counts)),
    ]
    try:
        await wait_listening(proxy_port)
        await wait_listening(admin_port)
        pid = sidecar.pid
        idle = {"fds": fds(pid), "tasks": await tasks(sidecar, task_counts)}
        load = Soak(f"http://127.0.0.1:{proxy_port}", args.exchanges, args.concurrency, args.seed)
        early = max(1, args.exchanges // 10)
        started = monotonic()
        running = asyncio.ensure_future(load.run())
        await load.at(early).wait()
        rss_early = status_kib(pid, "VmRSS")
        fds_busy = fds(pid)
        await running
        elapsed = monotonic() - started
        rss_end = status_kib(pid, "VmRSS")
        await asyncio.sleep(0.5)  # the last log lines are on their way through the pipe
        after_fds, waited = await settle_fds(pid, idle["fds"], args.settle_s)
        after = {"fds": after_fds, "tasks": await tasks(sidecar, task_counts), "waited_s": waited}
        metric = await scrape(f"http://127.0.0.1:{admin_port}")
    finally:
        for proc in (sidecar, upstream):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        for reader in readers:
            await reader
    return {
        "exchanges": args.exchanges,
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 1),
        "rate_per_s": round(args.exchanges / elapsed),
        "rss_kib": {f"after_{early}": rss_early, f"after_{args.exchanges}": rss_end},
        "rss_growth_pct": round(100 * (rss_end - rss_early) / rss_early, 2),
        "idle_before": idle,
        "fds_under_load": fds_busy,
        "idle_after": after,
        "clients_saw": dict(sorted(load.seen.items())),
        "llm_requests_total": dict(sorted(metric.items())),
        "log_lines": dict(sorted(log.items())),
        "totals": {
            "clients": sum(load.seen.values()),
            "metric": sum(metric.values()),
            "log_lines": sum(log.values()),
        },
    }


def main() -> int:
    if sys.argv[1:2] == ["sidecar"]:
        run_sidecar(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--exchanges", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settle-s", type=float, default=60.0, help="longest wait for idle fds")
    result = uvloop.run(soak(parser.parse_args()))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    totals = result["totals"]
    agree = totals["clients"] == totals["metric"] == totals["log_lines"]
    return 0 if agree and result["idle_after"]["fds"] <= result["idle_before"]["fds"] else 1


if __name__ == "__main__":
    sys.exit(main())
