"""Metrics cost per exchange: ``Metrics.started`` + ``Metrics.record``, no sockets.

``python bench/record_micro.py [--exchanges N] [--rounds R]``. Finished exchanges shaped as the
relay leaves them (DeepSeek chat: a JSON answer, and a stream with a keep-alive before its first
event; usage, cost, one attempt, the sidecar's overhead) are built once; each round starts and
records N of each kind on a fresh ``Metrics`` whose series already exist (the steady state: a
series is created once per label set, then only updated). The figure is µs per exchange, the
median of R rounds with the garbage collector paused (as ``timeit`` does), on the current CPU
(pin it with ``taskset -c 0`` for a stable figure).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from prometheus_client import CollectorRegistry  # noqa: E402

from sidecar.exchange import Cost, Exchange, Outcome, Usage  # noqa: E402
from sidecar.settings import DEFAULT_MODELS  # noqa: E402
from sidecar.telemetry.labels import ModelLabels  # noqa: E402
from sidecar.telemetry.metrics import Metrics  # noqa: E402


def exchange(n: int, stream: bool) -> Exchange:
    """A finished DeepSeek chat exchange, as the relay records it (times in seconds)."""
    ex = Exchange(
        request_id=f"0f3c1a52-7d4e-4b8a-9c21-{n:012d}",
        method="POST",
        route="chat_completions",
        received_at=100.0,
        started_wall=datetime.now(UTC),
        upstream="deepseek",
        requested_model="deepseek-chat",
        stream=stream,
        body_read_at=100.0002,
        sent_at=100.0004,
        response_started_at=100.35,
        first_data_at=100.36 + n % 5 * 0.1,
        status=200,
        reported_model="deepseek-chat",
        usage=Usage(input=1220, output=12 + n % 300, cache_hit=1152, cache_miss=68),
        attempts=1,
        attempt_codes=["200"],
        cost=Cost(0.0000806, 0.0000190, 0.0000132 + n % 300 * 1.1e-6, 0.0003),
        cost_usd=0.000113,
        response_id="3c9e41d2-8b7a-4f0e-9d61-2a5b7c0e4f18",
        finish_reasons=("stop",),
    )
    if stream:
        ex.saw_queue_signal = True  # a ": keep-alive" before the first event
        ex.first_token_at = 100.41 + n % 5 * 0.1
        ex.last_token_at = ex.first_token_at + 0.02 * (12 + n % 300)
    ex.finish(Outcome.COMPLETED, 101.0 + n % 7 * 0.5)
    return ex


def one_round(exchanges: list[Exchange]) -> float:
    """Seconds per exchange to start and record every exchange, on a fresh ``Metrics``."""
    metrics = Metrics(CollectorRegistry(), "deepseek", ModelLabels(DEFAULT_MODELS, 20))
    started, record = metrics.started, metrics.record
    for ex in exchanges[:64]:  # the series exist, as in a sidecar that has been running
        started(ex.route)
        record(ex)
    gc.collect()
    gc.disable()  # as timeit: a collection over the prebuilt exchanges is not record's cost
    try:
        begin = perf_counter()
        for ex in exchanges:
            started(ex.route)
            record(ex)
        return (perf_counter() - begin) / len(exchanges)
    finally:
        gc.enable()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=20000, help="exchanges of each kind")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the median is reported")
    args = parser.parse_args()
    kinds = {
        "json": [exchange(n, stream=False) for n in range(args.exchanges)],
        "stream": [exchange(n, stream=True) for n in range(args.exchanges)],
    }
    kinds["mixed"] = [
        ex for pair in zip(kinds["json"], kinds["stream"], strict=True) for ex in pair
    ]
    for kind, exchanges in kinds.items():
        rounds = [one_round(exchanges) * 1e6 for _ in range(args.rounds)]
        print(
            f"started + record, {kind:>6} exchange: {statistics.median(rounds):.2f} µs "
            f"(median of {args.rounds}; min {min(rounds):.2f}, max {max(rounds):.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
