"""Rate-limit facts from upstream response headers.

DeepSeek sends none of these (its only signal is the 429 body, read in ``observe``); OpenAI
and compatible gateways send ``x-ratelimit-*`` with Go-style reset durations (``1s``,
``6m0s``, ``12ms``) and ``retry-after`` / ``retry-after-ms`` on 429s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from sidecar.exchange import Exchange

RESOURCES = ("requests", "tokens")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float | None:
    """``6m0s`` → 360.0; a bare number is taken as seconds; anything else → None."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def observe_headers(ex: Exchange, headers: Mapping[str, str], now: datetime) -> None:
    """Record trace id, Retry-After and ``x-ratelimit-*`` values found in ``headers``."""
    ex.upstream_trace_id = headers.get("x-ds-trace-id") or ex.upstream_trace_id
    ex.limits.retry_after_s = parse_retry_after(headers, now)
    for resource in RESOURCES:
        limit = _number(headers.get(f"x-ratelimit-limit-{resource}"))
        if limit is not None:
            ex.limits.limit[resource] = limit
        remaining = _number(headers.get(f"x-ratelimit-remaining-{resource}"))
        if remaining is not None:
            ex.limits.remaining[resource] = remaining
        reset = headers.get(f"x-ratelimit-reset-{resource}")
        reset_s = parse_duration(reset) if reset is not None else None
        if reset_s is not None:
            ex.limits.reset_s[resource] = reset_s


def parse_retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds the upstream asks us to wait, or None if it did not say (or said nonsense).

    Reads ``retry-after-ms`` (float milliseconds, an OpenAI extension) first, then
    ``retry-after`` as delta-seconds (floats tolerated) or an HTTP-date relative to ``now``
    (RFC 9110 §10.2.3). Past dates and negative values mean "now" (0).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    millis = _finite(lowered.get("retry-after-ms"))
    if millis is not None:
        return max(millis / 1000.0, 0.0)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _finite(raw)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" zone: RFC 5322 says UTC with unknown origin
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def _finite(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None
