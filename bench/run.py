"""Proxy overhead bench: the same requests direct, through the sidecar and through nginx.

``python bench/run.py [--quick] [--out FILE] [--streams N] [--profile PREFIX]``

Every server and the load generator run in their own processes: ``upstream.py`` (a fast
raw-asyncio upstream), ``python -m sidecar run``, nginx (one worker, generated config) and
``load.py`` (aiohttp client). As in a pod, the proxy under test has a core of its own: it is
pinned to the first CPU, and the load, the upstream and this script to the others. CPU
figures are the proxy process's own user+sys time from /proc divided by the responses it
relayed; memory is VmHWM from /proc. Every relayed response is checked complete and
byte-identical to what the upstream sent. Three references run in the same way: a bare aiohttp
server answering the upstream's bytes itself, the smallest aiohttp relay, and the same relay
with a lean upstream leg (an asyncio protocol on httptools instead of aiohttp's client).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic, sleep
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import hotspots  # noqa: E402
import nginx  # noqa: E402
import procstat  # noqa: E402
from report import table  # noqa: E402

PY = sys.executable
PATH = "/chat/completions"


@dataclass
class Sizes:
    json_n: int
    sse_n: int
    ttfb_n: int
    streams: int
    hold_chunks: int
    concurrency: int = 16
    warmup: int = 300


@dataclass
class Target:
    name: str
    url: str
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    profile: str | None = None  # py-spy raw output prefix, sidecar only
    results: dict[str, Any] = field(default_factory=dict)

    def pids(self) -> list[int]:
        if self.proc is None:
            return []
        if self.name == "nginx":
            return procstat.family(self.proc.pid)
        return [self.proc.pid]


@dataclass(frozen=True)
class Cores:
    """Which CPUs the proxy under test gets, and which the load and the upstream get."""

    proxy: frozenset[int] | None = None
    rest: frozenset[int] | None = None

    @classmethod
    def split(cls) -> Cores:
        """The first available CPU for the proxy, the others for everything else (≥ 2 CPUs)."""
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            return cls()
        return cls(frozenset(available[:1]), frozenset(available[1:]))

    def describe(self) -> str:
        if self.proxy is None or self.rest is None:
            return "not pinned (one CPU)"
        return f"proxy on CPU {sorted(self.proxy)}, load and upstream on CPU {sorted(self.rest)}"


CORES = Cores()
# The checkout whose sidecar is measured (``--sidecar-root``): ``python -m`` imports from cwd.
SIDECAR_ROOT = ROOT


def pin(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child, and every thread it starts, to ``cpus``."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, limit_s: float = 20) -> None:
    deadline = monotonic() + limit_s
    while monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {limit_s}s")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def start_upstream() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [PY, str(HERE / "upstream.py")], stdout=subprocess.PIPE, preexec_fn=pin(CORES.rest)
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    if len(line) != 2 or line[0] != "PORT":
        raise RuntimeError(f"upstream did not report its port: {line}")
    return proc, int(line[1])


def start_sidecar(upstream_port: int, tmp: Path, tag: str) -> Target:
    port, admin = free_port(), free_port()
    log = tmp / f"sidecar-{tag}.log"
    upstream = f"http://127.0.0.1:{upstream_port}"
    cmd = [PY, "-m", "sidecar", "run", "--upstream", upstream, "--shutdown-timeout", "2"]
    cmd += ["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=SIDECAR_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=pin(CORES.proxy),
        )
    wait_port(port, proc, "sidecar")
    return Target("sidecar", f"http://127.0.0.1:{port}{PATH}", proc, log)


def start_nginx(binary: str, upstream_port: int, tmp: Path, tag: str) -> Target:
    port = free_port()
    work = tmp / f"nginx-{tag}"
    work.mkdir()
    proc = nginx.start(binary, work, port, upstream_port, preexec_fn=pin(CORES.proxy))
    wait_port(port, proc, "nginx")
    deadline = monotonic() + 5
    while not procstat.children(proc.pid) and monotonic() < deadline:
        sleep(0.05)  # the master forks its worker after it listens
    return Target("nginx", f"http://127.0.0.1:{port}{PATH}", proc, work / "nginx.stderr")


def load(url: str, mode: str, n: int, conc: int, *extra: str, deadline: float = 120) -> Any:
    cmd = [PY, str(HERE / "load.py"), url, mode, str(n), str(conc), "--deadline", str(deadline)]
    done = subprocess.run(
        [*cmd, *extra],
        capture_output=True,
        timeout=deadline + 30,
        check=False,
        preexec_fn=pin(CORES.rest),
    )
    if done.returncode != 0:
        raise RuntimeError(f"load.py failed: {done.stderr.decode()[-2000:]}")
    return orjson.loads(done.stdout)


def cpu_phase(t: Target, name: str, mode: str, n: int, conc: int, *extra: str) -> None:
    pids = t.pids()
    spy = start_py_spy(pids[0], f"{t.profile}.{name}.txt") if t.profile and pids else None
    before = procstat.total_cpu(pids) if pids else (0.0, 0.0)
    result = load(t.url, mode, n, conc, *extra)
    try:
        after = procstat.total_cpu(pids) if pids else (0.0, 0.0)
    except OSError:  # the proxy died under load: report it, keep the run going
        after = before
        result["errors"] += 1
        result["samples"].append(f"{t.name} process exited during the {name} phase")
        pids = []
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)
    if pids and result["ok"]:
        user, system = after[0] - before[0], after[1] - before[1]
        result["cpu_s"] = round(user + system, 3)
        result["cpu_user_s"] = round(user, 3)
        result["cpu_sys_s"] = round(system, 3)
        result["cpu_us_per"] = round((user + system) * 1e6 / result["ok"], 1)
    result["rps"] = round(result["ok"] / result["elapsed_s"], 1) if result["elapsed_s"] else 0
    t.results[name] = result
    print(
        f"  {t.name:8} {name:5} ok={result['ok']}/{n} mismatch={result['mismatch']} "
        f"errors={result['errors']} cpu_us_per={result.get('cpu_us_per', '-')} "
        f"(user {result.get('cpu_user_s', '-')} s, sys {result.get('cpu_sys_s', '-')} s) "
        f"p50={result['latency_ms'].get('p50')}ms",
        flush=True,
    )


def throughput_phases(t: Target, sz: Sizes) -> None:
    c = sz.concurrency
    pids = t.pids()
    if pids:  # a proxy that burns CPU while idle would skew every figure below
        before = sum(procstat.total_cpu(pids))
        sleep(1.0)
        t.results["idle_cpu_pct"] = round(100 * (sum(procstat.total_cpu(pids)) - before), 1)
    load(t.url, "json", sz.warmup, c)
    load(t.url, "sse", max(sz.warmup // 10, c), c)
    cpu_phase(t, "json", "json", sz.json_n, c)
    cpu_phase(t, "sse", "sse", sz.sse_n, c, "--chunks", "100")
    cpu_phase(t, "ttfb", "sse", sz.ttfb_n, 1, "--chunks", "2")


def hold_phase(t: Target, sz: Sizes) -> None:
    pids = t.pids()
    idle = procstat.total_kib(pids, "VmRSS")
    peak_rss = 0
    stop_sampling = threading.Event()

    def sample() -> None:
        nonlocal peak_rss
        while not stop_sampling.wait(0.25):
            try:
                peak_rss = max(peak_rss, procstat.total_kib(pids, "VmRSS"))
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before = sum(procstat.total_cpu(pids))
    deadline = sz.hold_chunks + 60
    try:
        result = load(
            t.url,
            "hold",
            sz.streams,
            sz.streams,
            "--chunks",
            str(sz.hold_chunks),
            "--interval-ms",
            "1000",
            deadline=deadline,
        )
    finally:
        stop_sampling.set()
        sampler.join()
    result["idle_rss_kib"] = idle
    result["peak_rss_sampled_kib"] = peak_rss
    # CPU to carry the open streams: accepting, relaying one event a second, closing.
    with contextlib.suppress(OSError):
        result["cpu_s"] = round(sum(procstat.total_cpu(pids)) - cpu_before, 3)
    try:
        result["vmhwm_kib"] = procstat.total_kib(pids, "VmHWM")
    except OSError:  # the proxy died holding the streams: the sampled peak is all we have
        result["vmhwm_kib"] = peak_rss
        result["errors"] += 1
        result["samples"].append(f"{t.name} process exited during the hold phase")
    t.results["hold"] = result
    print(
        f"  {t.name:8} hold  ok={result['ok']}/{sz.streams} mismatch={result['mismatch']} "
        f"errors={result['errors']} idle={idle / 1024:.1f}MiB "
        f"VmHWM={result['vmhwm_kib'] / 1024:.1f}MiB",
        flush=True,
    )


def exchange_outcomes(log: Path | None) -> dict[str, int]:
    """Tally the sidecar's per-exchange log lines by outcome (a cross-check on counts)."""
    tally: Counter[str] = Counter()
    if log is None or not log.exists():
        return {}
    for line in log.read_bytes().splitlines():
        if b'"exchange"' not in line:
            continue
        try:
            tally[str(orjson.loads(line).get("outcome"))] += 1
        except orjson.JSONDecodeError:
            tally["unparsed"] += 1
    return dict(tally)


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sidecar_commit": git("rev-parse", "--short", "HEAD"),
        "sidecar_tree": "modified" if git("status", "--porcelain", "sidecar") else "clean",
    }


def git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=SIDECAR_ROOT, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.decode().strip()


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


def py_spy() -> str | None:
    return os.environ.get("PY_SPY") or shutil.which("py-spy")


def start_py_spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    """Sample ``pid`` until SIGINT; collapsed stacks go to ``out``.

    py-spy pauses the process for each sample (exact stacks), so a profiled run is slower.
    """
    binary = py_spy()
    assert binary is not None
    proc = subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--output",
            out,
            "--rate",
            "250",
            "--duration",
            "300",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sleep(1.0)  # attach before the load starts
    return proc


def start_reference(script: str, name: str, what: str, *args: str) -> Target:
    """One of the reference processes in ``bench/``, pinned like the sidecar, on a free port."""
    port = free_port()
    cmd = [PY, str(HERE / script), *args, str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, preexec_fn=pin(CORES.proxy))
    wait_port(port, proc, what)
    return Target(name, f"http://127.0.0.1:{port}{PATH}", proc)


def start_bare_relay(upstream_port: int, tmp: Path, tag: str) -> Target:
    upstream = f"http://127.0.0.1:{upstream_port}"
    return start_reference("bare_relay.py", "aiohttp-relay", "bare aiohttp relay", upstream)


def start_lean_relay(upstream_port: int, tmp: Path, tag: str) -> Target:
    """The aiohttp server with a lean upstream leg: what the generic client costs the relay."""
    upstream = f"http://127.0.0.1:{upstream_port}"
    return start_reference("lean_relay.py", "lean-relay", "lean relay", upstream)


def start_bare_server(upstream_port: int, tmp: Path, tag: str) -> Target:
    """The reference server: the upstream's bytes answered by aiohttp itself, no proxying."""
    return start_reference("bare_server.py", "aiohttp-server", "bare aiohttp server")


def run(args: argparse.Namespace) -> dict[str, Any]:
    sz = (
        Sizes(json_n=1000, sse_n=200, ttfb_n=300, streams=args.streams, hold_chunks=6)
        if args.quick
        else Sizes(json_n=5000, sse_n=500, ttfb_n=1000, streams=args.streams, hold_chunks=10)
    )
    nofile = raise_nofile()
    if nofile < 3 * sz.streams + 100:
        print(f"warning: RLIMIT_NOFILE is {nofile}; {sz.streams} streams may fail", flush=True)
    binary = nginx.binary()
    notes: list[str] = []
    starters: list[tuple[str, Callable[[int, Path, str], Target]]] = [("sidecar", start_sidecar)]
    if binary is None:
        notes.append("nginx not found: the nginx column is skipped")
    else:
        starters.append(("nginx", lambda port, tmp, tag: start_nginx(binary, port, tmp, tag)))
    if not args.no_reference:
        starters.append(("aiohttp-server", start_bare_server))
        starters.append(("aiohttp-relay", start_bare_relay))
        if importlib.util.find_spec("httptools") is None:
            notes.append("httptools not installed (the dev extra): the lean relay is skipped")
        else:
            starters.append(("lean-relay", start_lean_relay))
    global CORES, SIDECAR_ROOT
    CORES = Cores() if args.no_pin else Cores.split()
    SIDECAR_ROOT = Path(args.sidecar_root).resolve() if args.sidecar_root else ROOT
    if CORES.rest is not None:
        os.sched_setaffinity(0, CORES.rest)
    print(f"CPU pinning: {CORES.describe()}", flush=True)
    started = monotonic()
    upstream, up_port = start_upstream()
    results: dict[str, dict[str, Any]] = {}
    running: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            print("phase 1: CPU per response, CPU per stream, TTFB", flush=True)
            direct = Target("direct", f"http://127.0.0.1:{up_port}{PATH}")
            throughput_phases(direct, sz)
            results["direct"] = direct.results
            for name, start in starters:
                target = start(up_port, tmp, "cpu")
                running.append(target)
                target.profile = args.profile if name == "sidecar" else None
                throughput_phases(target, sz)
                stop(target.proc)
                if name == "sidecar":
                    target.results["outcomes"] = exchange_outcomes(target.log)
                results[name] = target.results
            print(f"phase 2: peak RSS with {sz.streams} open slow streams", flush=True)
            for name, start in starters:
                target = start(up_port, tmp, "hold")  # fresh process: VmHWM of this phase only
                running.append(target)
                hold_phase(target, sz)
                stop(target.proc)
                results[name]["hold"] = target.results["hold"]
                if name == "sidecar":
                    results[name]["hold_outcomes"] = exchange_outcomes(target.log)
        finally:
            for target in running:
                stop(target.proc)
            stop(upstream)
    if args.profile:
        notes.append("sidecar sampled by py-spy during its CPU phases: its figures are inflated")
        for phase in ("json", "sse"):
            path = f"{args.profile}.{phase}.txt"
            total, self_counts, _ = hotspots.summarise(Path(path).read_text())
            print(f"\n--- py-spy {phase}: {total} samples, top self time ({path}) ---")
            for key, count in self_counts.most_common(15):
                print(f"{100 * count / max(total, 1):6.1f}%  {key}")
    return {
        "machine": machine(),
        "sizes": sz.__dict__,
        "wall_s": round(monotonic() - started, 1),
        "pinning": CORES.describe(),
        "notes": notes,
        "targets": results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (~1 minute)")
    parser.add_argument("--out", help="write the full results as JSON to this file")
    parser.add_argument("--streams", type=int, default=1000, help="open streams for memory")
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the reference columns (bare aiohttp server, aiohttp relay, lean relay)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the proxy and the load to CPUs"
    )
    parser.add_argument(
        "--sidecar-root",
        metavar="DIR",
        help="measure the sidecar of another checkout (e.g. a git worktree of an older commit)",
    )
    parser.add_argument(
        "--profile", metavar="PREFIX", help="sample the sidecar with py-spy: PREFIX.json.txt ..."
    )
    args = parser.parse_args()
    if args.profile and py_spy() is None:
        parser.error("--profile needs py-spy on PATH (or PY_SPY=/path/to/py-spy)")
    result = run(args)
    markdown, failed = table(result)
    print()
    print(markdown)
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
