"""Helpers for tests that use the simulator: a fast scenario and wire-shape comparison.

Kept in the package (not under tests/) so the sidecar's own tests can start a simulator with the
same two lines: ``app = build_app(fast_scenario(), seed=1)`` and ``await aiohttp_server(app)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from sidecar.simulator.scenario import Scenario


def fast_scenario(**changes: Any) -> Scenario:
    """Millisecond latencies and no jitter, so a test's whole exchange takes a few ms."""
    base = Scenario(
        ttft_base_s=0.001,
        prefill_s_per_token=0.0,
        decode_s_per_token=0.0005,
        jitter=0.0,
        keepalive_interval_s=0.02,
        min_output_tokens=4,
        max_output_tokens=12,
        min_reasoning_tokens=3,
        max_reasoning_tokens=6,
    )
    return base.replace(**changes)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def key_paths(obj: Any, prefix: str = "") -> Iterator[str]:
    """Every key path in wire order with its value's kind, e.g. ``choices[].delta.content:null``.

    Lists contribute their first element's paths, so two bodies compare equal when they have the
    same keys in the same order at every level and the same nullability.
    """
    if isinstance(obj, dict):
        if not obj:
            yield f"{prefix}:{{}}"
        for key, value in obj.items():
            yield from key_paths(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(obj, list):
        if not obj:
            yield f"{prefix}:[]"
        else:
            yield from key_paths(obj[0], f"{prefix}[]")
    else:
        yield f"{prefix}:{_kind(obj)}"


def split_events(raw: bytes) -> list[bytes]:
    """Split an SSE body on blank lines (LF framing), dropping the trailing empty piece."""
    return [event for event in raw.split(b"\n\n") if event]


def data_objects(raw: bytes) -> list[dict[str, Any]]:
    """The JSON objects of every ``data:`` line, ``[DONE]`` excluded."""
    out = []
    for event in split_events(raw):
        for line in event.split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                out.append(orjson.loads(line[6:]))
    return out
