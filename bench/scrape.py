"""Scrape bench: what a Prometheus scrape of /metrics costs the streams the sidecar relays.

``python bench/scrape.py [--handler H] [--streams N] [--seconds S] [--runs R] [--every S]
[--out FILE]``

One sidecar process (pinned to the first CPU) relays N paced streams (20 events a second
each) from ``upstream.py``; ``scrape_load.py`` (pinned, with the upstream, to the second CPU)
measures the gap between consecutive chunks and the time to first byte at the client, for S
seconds without scrapes and S seconds with a scrape every 0.25 s (Prometheus's own headers:
OpenMetrics, gzip), in R runs of each, alternated. It does so twice: with a realistic number
of series, then with the label caps' worst case (every model slot, route, code and outcome
filled by echo requests, until sending them again adds no line). ``--handler`` swaps in one
of the reference handlers of ``handlers.py``. Whole run: about 2.5 minutes.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from time import monotonic, sleep
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import procstat  # noqa: E402
from handlers import VARIANTS  # noqa: E402
from run import PY, ROOT, free_port, machine, raise_nofile, stop, wait_port  # noqa: E402
from scrape_load import PROMETHEUS_ACCEPT, percentiles  # noqa: E402

TEXT_ACCEPT = "text/plain;version=0.0.4"
# A run during which other processes took more than this share of the sidecar's CPU is run
# again (at most RETRIES times; the cleanest run is kept and its share reported).
FOREIGN_CPU_PCT = 5.0
RETRIES = 1


def cpus() -> tuple[set[int] | None, set[int] | None]:
    """(sidecar CPUs, load CPUs): one each when there are two or more, else no pinning."""
    try:
        mine = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(mine) < 2:
        return None, None
    return {mine[0]}, {mine[1]}


def pinned(cpu: set[int] | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, cpu)


def start_upstream(cpu: set[int] | None) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [PY, str(HERE / "upstream.py")], stdout=subprocess.PIPE, preexec_fn=pinned(cpu)
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    if len(line) != 2 or line[0] != "PORT":
        raise RuntimeError(f"upstream did not report its port: {line}")
    return proc, int(line[1])


def start_sidecar(
    upstream_port: int, log: Path, cpu: set[int] | None, handler: str
) -> tuple[subprocess.Popen[bytes], str, str]:
    port, admin = free_port(), free_port()
    entry = ["-m", "sidecar"] if handler == "sidecar" else [str(HERE / "handlers.py"), handler]
    cmd = [PY, *entry, "run", "--upstream", f"http://127.0.0.1:{upstream_port}"]
    cmd += ["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
    # A short idle timeout and body cap, so the filler can produce timeouts and 413s quickly.
    cmd += ["--shutdown-timeout", "2", "--idle-timeout", "1", "--max-request-bytes", "8192"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pinned(cpu)
        )
    wait_port(port, proc, "sidecar")
    wait_port(admin, proc, "sidecar admin")
    return proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"


def load(cpu: set[int] | None, *args: str, limit_s: float = 120) -> Any:
    with tempfile.NamedTemporaryFile(prefix="scrape-load-", suffix=".json") as out:
        cmd = [PY, str(HERE / "scrape_load.py"), *args, "--out", out.name]
        done = subprocess.run(
            cmd, capture_output=True, timeout=limit_s, check=False, preexec_fn=pinned(cpu)
        )
        if done.returncode != 0:
            raise RuntimeError(f"scrape_load.py failed: {done.stderr.decode()[-2000:]}")
        return orjson.loads(Path(out.name).read_bytes())


def scrape(admin: str, accept: str) -> tuple[float, bytes]:
    """(latency ms, decompressed body) of one gzip scrape."""
    request = urllib.request.Request(
        admin + "/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"}
    )
    started = monotonic()
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
        encoding = response.headers.get("Content-Encoding", "")
    elapsed = (monotonic() - started) * 1000
    return elapsed, gzip.decompress(raw) if encoding == "gzip" else raw


def exposition(admin: str) -> dict[str, Any]:
    """Size of both formats, and the latency of one full rendering on an idle sidecar."""
    out: dict[str, Any] = {}
    for name, accept in (("openmetrics", PROMETHEUS_ACCEPT), ("text", TEXT_ACCEPT)):
        for _ in range(2):  # the second is the one reported: per-series caches are warm
            sleep(1.1)  # longer than the sidecar reuses a rendering
            ms, body = scrape(admin, accept)
        out[name] = {
            "lines": body.count(b"\n"),
            "bytes": len(body),
            "gzip_bytes": len(gzip.compress(body)),
            "idle_scrape_ms": round(ms, 2),
        }
    return out


def others_busy_pct(seconds: float = 1.0) -> float:
    """CPU used by everything on this machine while this bench is idle (should be ~0)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    before = sum(procstat.cpu_busy(c) for c in cores)
    sleep(seconds)
    return round(100 * (sum(procstat.cpu_busy(c) for c in cores) - before) / seconds, 1)


def phase(t: Setup, scrapes: bool, seconds: float) -> dict[str, Any]:
    """One run of paced streams; CPU of the sidecar, and of anything else on its CPU."""
    extra = ["--streams", str(t.args.streams), "--seconds", str(seconds), "--raw"]
    if scrapes:
        extra += ["--scrape", t.admin, "--every", str(t.args.every)]
    core = min(t.sidecar_cpu) if t.sidecar_cpu else None
    before, busy_before = procstat.cpu_seconds(t.pid), core_busy(core)
    started = monotonic()
    result: dict[str, Any] = load(t.load_cpu, "paced", t.url, *extra, limit_s=seconds + 90)
    elapsed = monotonic() - started
    own = procstat.cpu_seconds(t.pid) - before
    result["sidecar_rss_mib"] = round(procstat.status_kib(t.pid, "VmRSS") / 1024, 1)
    result["sidecar_cpu_pct"] = round(100 * own / elapsed, 1)
    if core is not None:  # other processes on the sidecar's CPU would skew every figure
        result["foreign_cpu_pct"] = round(100 * (core_busy(core) - busy_before - own) / elapsed, 1)
    return result


def core_busy(core: int | None) -> float:
    return procstat.cpu_busy(core) if core is not None else 0.0


def condition(t: Setup, scrapes: bool) -> dict[str, Any]:
    """The runs of one condition (alternated with the other by the caller), pooled."""
    runs = t.runs[scrapes]
    gaps = [g for r in runs for g in r["raw_gap_ms"]]
    ttfb = [g for r in runs for g in r["raw_ttfb_ms"]]
    return {
        "gap_ms": percentiles(gaps),
        "ttfb_ms": percentiles(ttfb),
        "scrape_ms": percentiles([ms for r in runs for ms in r["raw_scrape_ms"]]),
        "scrape_gzip_bytes": max((r["scrape_gzip_bytes"] for r in runs), default=0),
        "scrapes": sum(r["scrape_ms"].get("n", 0) for r in runs),
        "ok": sum(r["ok"] for r in runs),
        "mismatch": sum(r["mismatch"] for r in runs),
        "errors": sum(r["errors"] + r["scrape_errors"] for r in runs),
        "samples": [x for r in runs for x in r["samples"]],
        "run_gap_p99_ms": [r["gap_ms"]["p99"] for r in runs],
        "run_ttfb_p99_ms": [r["ttfb_ms"]["p99"] for r in runs],
        "sidecar_cpu_pct": round(median(r["sidecar_cpu_pct"] for r in runs), 1),
        "sidecar_rss_mib": max(r["sidecar_rss_mib"] for r in runs),
        "foreign_cpu_pct": max((r.get("foreign_cpu_pct", 0.0) for r in runs), default=0.0),
    }


@dataclass
class Setup:
    args: argparse.Namespace
    pid: int
    url: str
    admin: str
    sidecar_cpu: set[int] | None
    load_cpu: set[int] | None
    runs: dict[bool, list[dict[str, Any]]] = field(default_factory=dict)


def measure(t: Setup, profile: str) -> dict[str, Any]:
    filled = load(t.load_cpu, "fill", t.url, profile)
    expo = exposition(t.admin)
    if profile == "worst":  # a second pass must add no series
        load(t.load_cpu, "fill", t.url, profile)
        again = exposition(t.admin)
        expo = {**again, "growth_lines": again["text"]["lines"] - expo["text"]["lines"]}
    om, text = expo["openmetrics"], expo["text"]
    print(
        f"{profile}: {filled['requests']} fill requests; exposition {text['lines']} lines, "
        f"{text['bytes']} B (OpenMetrics {om['bytes']} B, gzip {om['gzip_bytes']} B); "
        f"idle scrape {om['idle_scrape_ms']} ms OpenMetrics, {text['idle_scrape_ms']} ms text",
        flush=True,
    )
    phase(t, False, 3)  # warm-up, not measured
    t.runs = {False: [], True: []}
    each = t.args.seconds / t.args.runs
    for scrapes in (False, True) * t.args.runs:  # alternated: drift hits both alike
        run_ = phase(t, scrapes, each)
        for _ in range(RETRIES):
            if run_.get("foreign_cpu_pct", 0.0) <= FOREIGN_CPU_PCT:
                break
            print(f"  (other processes took {run_['foreign_cpu_pct']}% of its CPU: again)")
            again = phase(t, scrapes, each)
            run_ = min(run_, again, key=lambda r: r.get("foreign_cpu_pct", 0.0))
        t.runs[scrapes].append(run_)
        g, sc = run_["gap_ms"], run_["scrape_ms"]
        print(
            f"  {'scrapes' if scrapes else 'no scrapes':10} ok={run_['ok']} "
            f"gap p50/p99/p99.9 {g.get('p50')}/{g.get('p99')}/{g.get('p99.9')} ms, "
            f"ttfb p99 {run_['ttfb_ms'].get('p99')} ms, scrape p50/p99 "
            f"{sc.get('p50', '-')}/{sc.get('p99', '-')} ms, sidecar CPU "
            f"{run_['sidecar_cpu_pct']}%, other CPU on its core {run_.get('foreign_cpu_pct')}%",
            flush=True,
        )
    pooled = {"without": condition(t, False), "with": condition(t, True)}
    for runs in t.runs.values():
        for r in runs:
            del r["raw_gap_ms"], r["raw_ttfb_ms"], r["raw_scrape_ms"]
    runs = {"without": t.runs[False], "with": t.runs[True]}
    return {"fill": filled, "exposition": expo, **pooled, "runs": runs}


def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    busy = others_busy_pct()
    if busy > 10:
        print(f"warning: other processes use {busy}% CPU: figures will be noisy", flush=True)
    side_cpu, load_cpu = cpus()
    if load_cpu is not None:
        os.sched_setaffinity(0, load_cpu)  # this orchestrator stays off the sidecar's CPU
    started = monotonic()
    upstream, up_port = start_upstream(load_cpu)
    results: dict[str, Any] = {}
    proc = None
    with tempfile.TemporaryDirectory(prefix="sidecar-scrape-") as tmp:
        try:
            proc, url, admin = start_sidecar(
                up_port, Path(tmp) / "sidecar.log", side_cpu, args.handler
            )
            setup = Setup(args, proc.pid, url, admin, side_cpu, load_cpu)
            for profile in ("realistic", "worst"):
                results[profile] = measure(setup, profile)
        finally:
            stop(proc)
            stop(upstream)
    return {
        "machine": {**machine(), "pinned": side_cpu is not None, "others_busy_pct": busy},
        "settings": {
            "streams": args.streams,
            "runs": args.runs,
            "seconds": args.seconds,
            "every_s": args.every,
            "handler": args.handler,
        },
        "wall_s": round(monotonic() - started, 1),
        "profiles": results,
    }


def table(result: dict[str, Any]) -> str:
    every = f"every {result['settings']['every_s']:g} s"
    rows = [
        "| series | scrapes | gap p50 | gap p99 | gap p99.9 | TTFB p50 | TTFB p99 "
        "| scrape p50 | scrape p99 | sidecar CPU | other CPU on its core |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for profile, res in result["profiles"].items():
        label = f"{profile}: {res['exposition']['text']['lines']} lines"
        for key in ("without", "with"):
            r = res[key]
            g, t, s = r["gap_ms"], r["ttfb_ms"], r["scrape_ms"]
            rows.append(
                f"| {label} | {every if key == 'with' else 'none'} | {g['p50']} | {g['p99']} "
                f"| {g['p99.9']} | {t['p50']} | {t['p99']} | {s.get('p50', '—')} "
                f"| {s.get('p99', '—')} | {r['sidecar_cpu_pct']}% | {r['foreign_cpu_pct']}% |"
            )
        w, wo = res["with"], res["without"]
        added = {p: w["gap_ms"][p] - wo["gap_ms"][p] for p in ("p50", "p99", "p99.9")}
        ttfb = {p: w["ttfb_ms"][p] - wo["ttfb_ms"][p] for p in ("p50", "p99")}
        rows.append(
            f"| {profile}: added by scrapes | | {added['p50']:+.2f} | **{added['p99']:+.2f}** "
            f"| {added['p99.9']:+.2f} | {ttfb['p50']:+.2f} | {ttfb['p99']:+.2f} | | | | |"
        )
        rows.append(
            f"| {profile}: p99 of each run, none / scrapes (the noise) | | "
            f"| {_runs(wo['run_gap_p99_ms'])} / {_runs(w['run_gap_p99_ms'])} | | "
            f"| {_runs(wo['run_ttfb_p99_ms'])} / {_runs(w['run_ttfb_p99_ms'])} | | | | |"
        )
    return "\n".join(rows) + "\n\nAll times in ms, at the client."


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=300, help="concurrent paced streams")
    parser.add_argument(
        "--seconds", type=float, default=15, help="measured seconds per condition, all runs"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per condition, alternating with the other"
    )
    parser.add_argument("--every", type=float, default=0.25, help="scrape interval, seconds")
    parser.add_argument(
        "--handler",
        choices=("sidecar", *VARIANTS),
        default="sidecar",
        help="a reference /metrics handler instead of the sidecar's (bench/handlers.py)",
    )
    parser.add_argument("--out", help="write the full results as JSON to this file")
    args = parser.parse_args()
    result = run(args)
    print()
    print(table(result))
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    bad = sum(
        r[k]["mismatch"] + r[k]["errors"]
        for r in result["profiles"].values()
        for k in ("with", "without")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
