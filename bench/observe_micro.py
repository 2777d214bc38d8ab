"""Observation cost per SSE event after the first token: the readers alone, no sockets.

``python bench/observe_micro.py [--events N] [--finish-reasons]``. A DeepSeek-shaped stream is
fed to the sidecar's ``StreamReader`` one event per chunk, as the relay feeds it (each upstream
read is usually one event); the first event (model, first token) is fed before the clock starts.
The figure is the mean wall time per event over N events, best of five rounds, on the current
CPU (pin it with ``taskset -c 0`` for a stable figure). Target: ≤ 1 µs per event.
``--finish-reasons`` reads as the relay does with span export on (one more scan per event).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from payloads import sse_events  # noqa: E402

from sidecar.exchange import Exchange  # noqa: E402
from sidecar.observe.readers import reader_for  # noqa: E402

TARGET_US = 1.0


def one_round(events: tuple[bytes, ...], finish_reasons: bool = False) -> float:
    """Seconds per event to feed every event after the first to a fresh reader."""
    ex = Exchange("bench", "POST", "chat_completions", 0.0, datetime.now(UTC), stream=True)
    reader = reader_for(ex, "text/event-stream", None, finish_reasons=finish_reasons)
    feed = reader.feed
    first = 0
    while ex.first_token_at is None:  # the role-only delta, then the first content
        feed(events[first], 0.0)
        first += 1
    started = perf_counter()
    for event in events[first:]:
        feed(event, 1.0)
    elapsed = perf_counter() - started
    reader.close(2.0)
    assert ex.usage is not None and ex.last_token_at == 1.0, "the stream was not observed"
    return elapsed / (len(events) - first)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="content events per round")
    parser.add_argument(
        "--finish-reasons", action="store_true", help="also look for finish reasons (span export)"
    )
    args = parser.parse_args()
    events = sse_events(args.events)
    per_event_us = min(one_round(events, args.finish_reasons) for _ in range(5)) * 1e6
    verdict = "met" if per_event_us <= TARGET_US else f"missed ({per_event_us / TARGET_US:.1f}x)"
    print(
        f"observation per SSE event after the first token: {per_event_us:.2f} µs "
        f"(target ≤ {TARGET_US:g} µs: {verdict}; {len(events)} events, best of 5)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
