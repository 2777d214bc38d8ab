"""Structured logs: structlog rendering with orjson, one line per finished exchange.

Lines go through structlog's BytesLogger to a sink: in the running sidecar a ``LineWriter``
(``writer.py``), which writes each line from its own thread so a blocked stdout never stalls
the event loop, and a line still appears as soon as its exchange finishes. Only fields named
here are ever logged: no headers, no bodies, so keys and prompts cannot leak by accident.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, BinaryIO, Protocol, cast

import orjson
import structlog

from sidecar.exchange import Exchange

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class Sink(Protocol):
    """Where rendered lines go: a binary file, or a ``LineWriter``."""

    def write(self, data: bytes, /) -> Any: ...

    def flush(self) -> Any: ...


def build_logger(level: str = "info", fmt: str = "json", stream: Sink | None = None) -> Any:
    """A logger writing one line per event to ``stream`` (stdout by default), flushed per line."""
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    out = stream if stream is not None else sys.stdout.buffer
    if fmt == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        processors.append(lambda _logger, _name, line: line.encode("utf-8"))
    else:
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
    return structlog.wrap_logger(
        structlog.BytesLogger(cast(BinaryIO, out)),  # it only calls write() and flush()
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=True,  # bind once, not on every exchange
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def exchange_fields(ex: Exchange, model_label: str) -> dict[str, Any]:
    """The log line's fields (CONTRACT "Log line"); durations in seconds."""
    usage = ex.usage
    return {
        "request_id": ex.request_id,
        "upstream_trace_id": ex.upstream_trace_id,
        "method": ex.method,
        "route": ex.route,
        "upstream": ex.upstream or None,
        "fallback_from": ex.fallback_from,
        "model": model_label,
        "stream": ex.stream,
        "code": ex.status,
        "outcome": ex.outcome.value if ex.outcome else None,
        "error_type": ex.sidecar_error,
        "ttft_s": _round(ex.ttft_s),
        "queue_s": _round(ex.queue_s),
        "duration_s": _round(ex.duration_s),
        "tpot_s": _round(ex.time_per_output_token_s),
        "input_tokens": usage.input if usage else None,
        "output_tokens": usage.output if usage else None,
        "cache_hit_tokens": usage.cache_hit if usage else None,
        "cache_miss_tokens": usage.cache_miss if usage else None,
        "reasoning_tokens": usage.reasoning if usage else None,
        "cost_usd": ex.cost_usd,
        "retry_after_s": ex.limits.retry_after_s,
        "attempts": ex.attempts,  # at every upstream tried, fallbacks included
        "guard_wait_s": _round(ex.guard_wait_s),
        "parse_error": ex.parse_error,
        "observer_error": ex.observer_error,
    }


def log_exchange(logger: Any, ex: Exchange, model_label: str) -> None:
    logger.info("exchange", **exchange_fields(ex, model_label))
