"""``deepseek-sidecar loadgen``: the demo's request mix sent to a sidecar, with no terminal view.

It runs where the demo cannot: as the app container of a pod (the Kubernetes demo overlay),
pointed at the sidecar by ``OPENAI_BASE_URL`` like any app. A plain aiohttp client keeps the
image free of SDK dependencies; every response is read to the end, so streams cost what a
real client's do. A tally line goes to stdout every ``--report-every`` seconds and at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys

import aiohttp
import orjson

from sidecar.console.live import stop_on_signals
from sidecar.console.traffic import ChatRequest, Result, Tally, Traffic

DEFAULT_BASE_URL = "http://127.0.0.1:8080"


def request_body(request: ChatRequest) -> bytes:
    body: dict[str, object] = {
        "model": request.model,
        "messages": request.messages(),
        "max_tokens": request.max_tokens,
    }
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": request.include_usage}
    return orjson.dumps(body)


class HttpSender:
    """Sends one request of the mix and reads its body to the end."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self.session = session
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    async def __call__(self, request: ChatRequest) -> Result:
        try:
            async with self.session.post(
                self.url, data=request_body(request), headers=self.headers
            ) as response:
                async for _ in response.content.iter_any():
                    pass
        except (aiohttp.ClientError, TimeoutError):
            return Result.ERROR
        if response.status == 429:
            return Result.RATE_LIMITED
        return Result.OK if response.status < 400 else Result.ERROR


async def _report(tally: Tally, every_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        print(tally.line("loadgen"), flush=True)


async def drive(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    stop_on_signals(stop)
    if args.duration is not None:
        asyncio.get_running_loop().call_later(args.duration, stop.set)
    tally = Tally()
    api_key = os.environ.get("OPENAI_API_KEY") or "sk-loadgen-0000"
    print(f"loadgen: sending the demo mix to {args.base_url}", flush=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        traffic = Traffic(HttpSender(session, args.base_url, api_key), args.seed, tally)
        reporter = asyncio.create_task(_report(tally, args.report_every, stop))
        await traffic.run(stop, burst=args.burst)
        await traffic.cancel()
        await reporter
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepseek-sidecar loadgen",
        description="send the demo's request mix to a sidecar until stopped",
    )
    parser.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
        help="where to send requests (default: $OPENAI_BASE_URL, else %(default)s)",
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--burst", type=int, default=14, help="requests in each 5 s burst")
    parser.add_argument("--report-every", type=float, default=10.0, help="seconds between tallies")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if (args.duration is not None and args.duration <= 0) or args.report_every <= 0:
        print(
            "deepseek-sidecar loadgen: --duration and --report-every must be > 0", file=sys.stderr
        )
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(drive(args))
    return 130
