"""Scrape bench load generator: label filling, and paced streams with or without scrapes.

``python bench/scrape_load.py fill PROXY_URL realistic|worst`` drives requests that create
series (model names, routes, codes, outcomes) and prints a JSON tally.

``python bench/scrape_load.py paced PROXY_URL --streams N --seconds S [--scrape ADMIN_URL]``
keeps N streams open (each ``--chunks`` events ``--interval-ms`` apart, a new stream as soon as
one ends) for S seconds, while an optional scraper GETs ``/metrics`` every ``--every`` seconds
with Prometheus's own headers. It prints the inter-chunk gaps and time to first byte seen by
this client, and the scrape latencies, as percentiles in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import resource
import sys
from collections import Counter
from time import perf_counter
from typing import Any

import aiohttp
import orjson
import uvloop

from sidecar.settings import DEFAULT_MODELS  # the names the sidecar keeps as labels

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import load
from payloads import (
    CHUNKS_HEADER,
    ECHO_FAULT_HEADER,
    ECHO_STATUS_HEADER,
    INTERVAL_HEADER,
    REQUEST_STREAM,
    echo_request,
    sse_body,
)

# What Prometheus 2.x sends: OpenMetrics preferred, gzip accepted.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
SCRAPE_HEADERS = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}

ROUTES = (
    "/chat/completions",
    "/v1/completions",
    "/anthropic/v1/messages",
    "/v1/responses",
    "/models",
    "/user/balance",
    "/bench/other",
)
STATUSES = (200, 400, 401, 402, 422, 429, 500, 503)
FAULTS = ("abort", "garbage", "stall", "leave")  # "leave": the client disconnects mid-stream


def percentiles(values: list[float]) -> dict[str, float]:
    """The tail that matters for stalls: p50, p99, p99.9, max (ms, 3 decimals)."""
    return load.percentiles(values, (0.5, 0.99, 0.999, 1.0), digits=3)


# --- fill ---------------------------------------------------------------------------------


Spec = tuple[str, str | None, bool, int, str]  # path, model, stream, status, fault


def fill_specs(profile: str) -> list[Spec]:
    """``realistic``: 400 mixed requests, 20 models, 4 routes. ``worst``: every combination."""
    if profile == "realistic":  # each application sticks to one model, route and mode
        rng = random.Random(7)
        models = [*DEFAULT_MODELS, *(f"team-model-{i}" for i in range(14))]
        home = {m: (ROUTES[i % 4], i % 3 != 0) for i, m in enumerate(models)}
        statuses = (200,) * 17 + (429, 400, 500)
        picks = [rng.choice(models) for _ in range(400)]
        return [(*home[m][:1], m, home[m][1], rng.choice(statuses), "") for m in picks]
    # 6 known names + 24 more (the cap keeps 20, the rest become "other") + no model ("none")
    models: list[str | None] = [*DEFAULT_MODELS, *(f"team-model-{i}" for i in range(24)), None]
    specs: list[Spec] = []
    for path, model, stream in itertools.product(ROUTES, models, (False, True)):
        specs += [(path, model, stream, status, "") for status in STATUSES]
        specs += [(path, model, stream, 200, fault) for fault in FAULTS]
    specs += [(path, None, False, 200, "too_large") for path in ROUTES]  # 413, rejected
    return specs


async def send(session: aiohttp.ClientSession, url: str, spec: Spec) -> str:
    path, model, stream, status, fault = spec
    headers = {"Content-Type": "application/json", ECHO_STATUS_HEADER: str(status)}
    if fault in ("abort", "garbage", "stall"):
        headers[ECHO_FAULT_HEADER] = fault
    if fault == "leave":
        headers[ECHO_FAULT_HEADER] = "slow"
    body = echo_request(model, stream, pad=16384 if fault == "too_large" else 0)
    try:
        async with session.post(url + path, data=body, headers=headers) as resp:
            if fault == "leave":
                await resp.content.readany()
                resp.close()  # drop the connection mid-stream
                return "left"
            await resp.read()
            return str(resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


async def fill(url: str, profile: str, concurrency: int) -> dict[str, Any]:
    specs = fill_specs(profile)
    stalls = [s for s in specs if s[4] == "stall"]
    others = [s for s in specs if s[4] != "stall"]
    tally: Counter[str] = Counter()
    started = perf_counter()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout, auto_decompress=False
    ) as session:
        queue = iter(others)

        async def worker() -> None:
            for spec in queue:
                tally[await send(session, url, spec)] += 1

        stalled = [asyncio.create_task(send(session, url, s)) for s in stalls]  # all at once
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        for result in await asyncio.gather(*stalled):
            tally[result] += 1
    return {"requests": len(specs), "elapsed_s": round(perf_counter() - started, 2), "tally": tally}


# --- paced streams ------------------------------------------------------------------------


class Paced:
    """N workers, each opening one paced stream after another until the deadline."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.expected = sse_body(args.chunks)
        self.headers = {
            "Content-Type": "application/json",
            CHUNKS_HEADER: str(args.chunks),
            INTERVAL_HEADER: str(args.interval_ms),
        }
        self.gaps_ms: list[float] = []
        self.ttfb_ms: list[float] = []
        self.scrape_ms: list[float] = []
        self.scrape_bytes = 0
        self.ok = self.mismatch = self.errors = self.scrape_errors = 0
        self.samples: list[str] = []

    def measuring(self, at: float) -> bool:
        return self.measure_from <= at < self.deadline

    async def stream(self, session: aiohttp.ClientSession) -> None:
        url = self.args.url + "/chat/completions"
        started = perf_counter()
        body = bytearray()
        try:
            async with session.post(url, data=REQUEST_STREAM, headers=self.headers) as resp:
                last = None
                async for chunk in resp.content.iter_any():
                    now = perf_counter()
                    if last is None:
                        if self.measuring(started):
                            self.ttfb_ms.append((now - started) * 1000)
                    elif self.measuring(now):
                        self.gaps_ms.append((now - last) * 1000)
                    last = now
                    body += chunk
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.errors += 1
            if len(self.samples) < 5:
                self.samples.append(f"{type(exc).__name__}: {exc}")
            return
        if status == 200 and body == self.expected:
            self.ok += 1
        else:
            self.mismatch += 1

    async def worker(self, session: aiohttp.ClientSession, offset_s: float) -> None:
        await asyncio.sleep(offset_s)  # spread the stream starts evenly
        while perf_counter() < self.deadline:
            await self.stream(session)

    async def scraper(self, session: aiohttp.ClientSession, admin_url: str) -> None:
        tick = perf_counter()
        while tick < self.deadline:
            started = perf_counter()
            try:
                async with session.get(admin_url + "/metrics", headers=SCRAPE_HEADERS) as resp:
                    data = await resp.read()
                    if resp.status != 200:
                        raise aiohttp.ClientError(f"status {resp.status}")
                if self.measuring(started):
                    self.scrape_ms.append((perf_counter() - started) * 1000)
                    self.scrape_bytes = len(data)
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.scrape_errors += 1
            tick = max(tick + self.args.every, perf_counter())  # never overlap, like Prometheus
            await asyncio.sleep(max(tick - perf_counter(), 0))

    async def run(self) -> dict[str, Any]:
        a = self.args
        stream_s = a.chunks * a.interval_ms / 1000
        self.measure_from = perf_counter() + stream_s + 0.5  # every worker has started
        self.deadline = self.measure_from + a.seconds
        timeout = aiohttp.ClientTimeout(total=a.seconds + 60)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=timeout, auto_decompress=False
        ) as session:
            tasks = [
                asyncio.create_task(self.worker(session, stream_s * i / a.streams))
                for i in range(a.streams)
            ]
            if a.scrape:
                tasks.append(asyncio.create_task(self.scraper(session, a.scrape)))
            await asyncio.gather(*tasks)
        return {
            "streams": a.streams,
            "seconds": a.seconds,
            "ok": self.ok,
            "mismatch": self.mismatch,
            "errors": self.errors,
            "samples": self.samples,
            "gap_ms": percentiles(self.gaps_ms),
            "ttfb_ms": percentiles(self.ttfb_ms),
            **(
                {
                    "raw_gap_ms": self.gaps_ms,
                    "raw_ttfb_ms": self.ttfb_ms,
                    "raw_scrape_ms": self.scrape_ms,
                }
                if a.raw
                else {}
            ),
            "scrape_ms": percentiles(self.scrape_ms),
            "scrape_gzip_bytes": self.scrape_bytes,
            "scrape_errors": self.scrape_errors,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fill")
    f.add_argument("url")
    f.add_argument("profile", choices=("realistic", "worst"))
    f.add_argument("--concurrency", type=int, default=32)
    p = sub.add_parser("paced")
    p.add_argument("url")
    p.add_argument("--streams", type=int, default=300)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--chunks", type=int, default=40)
    p.add_argument("--interval-ms", type=float, default=50)
    p.add_argument("--scrape", metavar="ADMIN_URL")
    p.add_argument("--every", type=float, default=0.25)
    p.add_argument("--raw", action="store_true", help="also print every gap and TTFB")
    for sub_parser in (f, p):
        sub_parser.add_argument("--out", help="write the JSON result to this file, not stdout")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.mode == "fill":
        result = uvloop.run(fill(args.url, args.profile, args.concurrency))
    else:
        result = uvloop.run(Paced(args).run())
    data = orjson.dumps(result) + b"\n"
    if args.out:  # large results (--raw) go to a file rather than through a pipe
        with open(args.out, "wb") as out:
            out.write(data)
    else:
        sys.stdout.buffer.write(data)


if __name__ == "__main__":
    main()
