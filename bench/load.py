"""Bench load generator: a separate process that sends a bounded number of requests.

``python bench/load.py URL MODE N CONCURRENCY [--chunks K] [--interval-ms MS]
[--deadline S]`` prints one JSON object: counts of complete, byte-identical responses,
mismatches and errors, wall time, and latency / time-to-first-byte percentiles in ms.

Modes: ``json`` (non-streaming completions), ``sse`` (streams of K events), ``hold`` (N
streams opened over a short ramp and held open while the upstream trickles events).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import sys
from time import perf_counter

import aiohttp
import orjson
import uvloop

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from payloads import (
    CHUNKS_HEADER,
    INTERVAL_HEADER,
    REQUEST_JSON,
    REQUEST_STREAM,
    json_body,
    sse_body,
)


def percentiles(
    values: list[float], points: tuple[float, ...] = (0.5, 0.9, 0.99, 1.0), digits: int = 4
) -> dict[str, float]:
    """Nearest-rank percentiles keyed ``p50``, ``p99.9``, ``max``, plus the count ``n``."""
    if not values:
        return {}
    ordered = sorted(values)
    out: dict[str, float] = {}
    for p in points:
        key = "max" if p == 1.0 else f"p{round(p * 100, 3):g}"
        out[key] = round(ordered[max(0, math.ceil(p * len(ordered)) - 1)], digits)
    out["n"] = len(ordered)
    return out


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        streaming = args.mode in ("sse", "hold")
        self.payload = REQUEST_STREAM if streaming else REQUEST_JSON
        self.expected = sse_body(args.chunks) if streaming else json_body()
        self.headers = {
            "Content-Type": "application/json",
            "Authorization": "Bearer sk-bench",
            CHUNKS_HEADER: str(args.chunks),
            INTERVAL_HEADER: str(args.interval_ms),
        }
        self.ok = 0
        self.mismatch = 0
        self.errors = 0
        self.samples: list[str] = []
        self.latency_ms: list[float] = []
        self.ttfb_ms: list[float] = []
        self.next = 0

    def note(self, text: str) -> None:
        if len(self.samples) < 5:
            self.samples.append(text)

    async def one(self, session: aiohttp.ClientSession) -> None:
        started = perf_counter()
        try:
            async with session.post(self.args.url, data=self.payload, headers=self.headers) as resp:
                first = await resp.content.readany()
                ttfb = perf_counter() - started
                rest = await resp.content.read()
                body = first + rest
                done = perf_counter() - started
                if resp.status != 200 or body != self.expected:
                    self.mismatch += 1
                    self.note(f"status {resp.status}, {len(body)} bytes != {len(self.expected)}")
                    return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.errors += 1
            self.note(f"{type(exc).__name__}: {exc}")
            return
        self.ok += 1
        self.ttfb_ms.append(ttfb * 1000)
        self.latency_ms.append(done * 1000)

    async def worker(self, session: aiohttp.ClientSession) -> None:
        while self.next < self.args.n:
            self.next += 1
            await self.one(session)

    async def run(self) -> dict[str, object]:
        args = self.args
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=args.deadline)
        started = perf_counter()
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            tasks = []
            for i in range(min(args.concurrency, args.n)):
                tasks.append(asyncio.create_task(self.worker(session)))
                if args.mode == "hold" and i % 50 == 49:
                    await asyncio.sleep(0.05)  # ramp: stay under the listen backlogs
            _done, pending = await asyncio.wait(tasks, timeout=args.deadline)
            for task in pending:
                task.cancel()
            if pending:
                self.note(f"deadline {args.deadline}s reached with {len(pending)} workers busy")
                self.errors += len(pending)
        return {
            "mode": args.mode,
            "n": args.n,
            "concurrency": args.concurrency,
            "ok": self.ok,
            "mismatch": self.mismatch,
            "errors": self.errors,
            "samples": self.samples,
            "elapsed_s": round(perf_counter() - started, 4),
            "latency_ms": percentiles(self.latency_ms),
            "ttfb_ms": percentiles(self.ttfb_ms),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("mode", choices=("json", "sse", "hold"))
    parser.add_argument("n", type=int)
    parser.add_argument("concurrency", type=int)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--interval-ms", type=float, default=0.0)
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = uvloop.run(Load(args).run())
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")


if __name__ == "__main__":
    main()
