"""Structured logs: structlog rendering with orjson, one line per finished exchange.

Lines go through structlog's BytesLogger to a sink: in the running sidecar a ``LineWriter``
(``writer.py``), which writes each line from its own thread so a blocked stdout never stalls
the event loop, and a line still appears as soon as its exchange finishes. Only fields named
here are ever logged: no headers, no bodies, so keys and prompts cannot leak by accident.

The exchange line, written once per request, skips structlog's processor chain in the JSON
format: the logger's ``exchange`` method builds the same dict the chain would (the fields,
then ``event``, ``level``, ``timestamp``) and hands ``orjson.dumps`` of it to the same
BytesLogger, so the bytes, the level filtering and the sink (drops counted) are unchanged at a
third of the cost. Other lines, and the console format, keep the chain.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from functools import cache
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
        wrapper_class=_wrapper_class(_LEVELS[level], fmt == "console"),
        cache_logger_on_first_use=True,  # bind once, not on every exchange
    )


@cache
def _wrapper_class(level: int, console: bool) -> type[Any]:
    """structlog's filtering logger for ``level``, plus ``exchange(fields)`` for the one line.

    Below the info level the method does nothing, as ``info`` would; in the console format it
    is ``info("exchange", ...)``; in JSON it renders directly (``_exchange_json``).
    """
    base = structlog.make_filtering_bound_logger(level)
    if level > logging.INFO:
        method: Any = _exchange_nop
    else:
        method = _exchange_console if console else _exchange_json
    return type(f"Exchange{base.__name__}", (base,), {"__slots__": (), "exchange": method})


def _exchange_nop(_self: Any, _fields: dict[str, Any]) -> None:
    return None


def _exchange_console(self: Any, fields: dict[str, Any]) -> None:
    self.info("exchange", **fields)


def _exchange_json(self: Any, fields: dict[str, Any]) -> None:
    """What ``info("exchange", **fields)`` writes, without the processor chain: the keys in the
    order structlog adds them (the bound context is empty), ``add_log_level``'s level, and
    ``TimeStamper(fmt="iso", utc=True)``'s timestamp, to the same ``BytesLogger``."""
    fields["event"] = "exchange"
    fields["level"] = "info"
    fields["timestamp"] = datetime.now(tz=UTC).isoformat().replace("+00:00", "Z")
    self._logger.msg(orjson.dumps(fields, default=repr))


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
    """The exchange line, through ``exchange`` on loggers from ``build_logger``."""
    fields = exchange_fields(ex, model_label)
    write = getattr(logger, "exchange", None)
    if write is None:  # a logger built elsewhere: the processor chain
        logger.info("exchange", **fields)
    else:
        write(fields)
