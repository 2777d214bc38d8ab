"""``deepseek-sidecar demo``: simulator + sidecar + traffic + the live view, in one command.

Both servers run as child processes on free local ports (exactly what a user would run by hand);
traffic goes through the sidecar with the official OpenAI SDK, and the view reads only the
sidecar's ``/metrics``. On exit the children get SIGTERM and are waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import aiohttp

from sidecar.console.live import Watcher, run_view, stop_on_signals
from sidecar.console.snapshot import View
from sidecar.console.workload import Tally, Workload

LIMIT_CONCURRENCY = 12  # what the demo scenario's balance buys at the simulator
BACKUP_KEY_ENV = "SIDECAR_DEMO_BACKUP_KEY"
# With --fallback: a breaker that opens after 5 consecutive 503s / connect failures / timeouts
# and probes again after 4 s, and a second (openai-flavour) simulator taking the traffic of three
# of the four models meanwhile; deepseek-reasoner is not mapped, so it keeps failing visibly.
# 429s are left out of `on`: the demo's bursts exceed the account's concurrency on purpose.
FALLBACK_CONFIG = """\
breaker_failures = 5
breaker_cooldown_s = 4

[[fallback]]
name = "backup"
upstream = "http://127.0.0.1:{port}/v1"
api_key_env = "{key_env}"
on = ["5xx", "connect", "timeout"]
models = {{ "deepseek-flash" = "fallback-small", "deepseek-chat" = "fallback-small", \
"deepseek-v4-pro" = "fallback-large" }}
"""


class DemoError(RuntimeError):
    """A child process failed to start; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(
    args: list[str], log: IO[bytes], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "sidecar", *args]
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )


def start_backup(logs: Path, seed: int) -> tuple[subprocess.Popen[bytes], int, list[str], Path]:
    """The fallback simulator and the sidecar flags that point at it (a config file)."""
    port = free_port()
    log = logs / "backup.log"
    with open(log, "wb") as out:
        proc = spawn(
            ["simulate", "--listen", f"127.0.0.1:{port}", "--seed", str(seed + 1),
             "--scenario", "fallback"],
            out,
        )  # fmt: skip
    config = logs / "sidecar.toml"
    config.write_text(FALLBACK_CONFIG.format(port=port, key_env=BACKUP_KEY_ENV), encoding="utf-8")
    return proc, port, ["--config", str(config)], log


async def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Poll ``url`` until it answers (any status below 500 for the simulator, 200 for readyz)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise DemoError(f"{url}: process exited with {proc.returncode}\n{tail}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as resp:
                    if resp.status == 200 or (resp.status < 500 and "readyz" not in url):
                        return
            await asyncio.sleep(0.1)
    raise DemoError(f"{url}: not ready after {timeout_s:.0f}s")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, wait, and only then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def summary(view: View | None, tally: Tally, metrics_url: str) -> str:
    lines = ["", "demo finished.", tally.line()]
    if view is not None:
        lines.append(
            f"sidecar saw: {view.requests:.0f} requests, {view.rate_limited:.0f} rate-limited (429)"
        )
        if view.upstreams:
            reasons = ", ".join(f"{r} {n:.0f}" for r, n in sorted(view.fallbacks.items()))
            lines.append(f"fallbacks: {sum(view.fallbacks.values()):.0f} ({reasons or 'none'})")
        for row in view.rows:
            ratio = "n/a" if row.cache_hit_ratio is None else f"{row.cache_hit_ratio * 100:.0f}%"
            lines.append(f"  {row.model}: {row.requests:.0f} requests, cache hit {ratio}")
    lines.append(f"metrics were served at {metrics_url} (run `deepseek-sidecar top` against yours)")
    return "\n".join(lines)


async def drive(args: argparse.Namespace, ports: tuple[int, int, int], logs: Path) -> int:
    sim_port, proxy_port, admin_port = ports
    metrics_url = f"http://127.0.0.1:{admin_port}/metrics"
    sim_log, car_log = open(logs / "simulator.log", "wb"), open(logs / "sidecar.log", "wb")  # noqa: SIM115
    backup: subprocess.Popen[bytes] | None = None
    car_flags: list[str] = []
    env: dict[str, str] | None = None
    if args.fallback:
        backup, backup_port, car_flags, backup_log = start_backup(logs, args.seed)
        env = {**os.environ, BACKUP_KEY_ENV: "sk-demo-backup"}
    sim = spawn(
        ["simulate", "--listen", f"127.0.0.1:{sim_port}", "--seed", str(args.seed),
         "--scenario", args.scenario],
        sim_log,
    )  # fmt: skip
    car = spawn(
        ["run", "--upstream", f"http://127.0.0.1:{sim_port}", "--listen", f"127.0.0.1:{proxy_port}",
         "--admin-listen", f"127.0.0.1:{admin_port}", "--limit-concurrency", str(LIMIT_CONCURRENCY),
         "--shutdown-timeout", "5", *car_flags],
        car_log,
        env,
    )  # fmt: skip
    tally, view = Tally(), None
    try:
        await wait_ready(f"http://127.0.0.1:{sim_port}/models", sim, logs / "simulator.log", 20)
        if backup is not None:
            await wait_ready(f"http://127.0.0.1:{backup_port}/models", backup, backup_log, 20)
        await wait_ready(f"http://127.0.0.1:{admin_port}/readyz", car, logs / "sidecar.log", 20)
        stop = asyncio.Event()
        stop_on_signals(stop)
        if args.duration is not None:
            asyncio.get_running_loop().call_later(args.duration, stop.set)
        workload = Workload(f"http://127.0.0.1:{proxy_port}", args.seed, tally)
        traffic = asyncio.create_task(workload.run(stop))
        try:
            async with aiohttp.ClientSession() as session:
                title = f"deepseek-sidecar demo  {metrics_url}"
                view = await run_view(
                    Watcher([metrics_url], session), title, args.interval, stop, tally.line
                )
        finally:
            stop.set()
            await traffic
            await workload.close()
    except DemoError as exc:
        print(f"deepseek-sidecar demo: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_process(car)
        stop_process(sim)
        if backup is not None:
            stop_process(backup)
        sim_log.close()
        car_log.close()
    print(summary(view, tally, metrics_url), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepseek-sidecar demo", description="simulator + sidecar + traffic + live view"
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: Ctrl-C)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", default=None, help="simulator scenario name or file")
    parser.add_argument(
        "--fallback",
        action="store_true",
        help="a second provider behind a breaker; DeepSeek has scheduled outages",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.scenario is None:
        args.scenario = "outage" if args.fallback else "demo"
    if (args.duration is not None and args.duration <= 0) or args.interval <= 0:
        print("deepseek-sidecar demo: --duration and --interval must be > 0", file=sys.stderr)
        return 2
    ports = (free_port(), free_port(), free_port())
    with tempfile.TemporaryDirectory(prefix="sidecar-demo-") as logs:
        try:
            return asyncio.run(drive(args, ports, Path(logs)))
        except KeyboardInterrupt:
            return 130
