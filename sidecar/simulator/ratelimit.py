"""OpenAI-flavour rate limits: fixed one-minute request and token windows per API key.

Only the ``openai`` flavour uses this; DeepSeek sends no rate-limit headers at all. Reset times are
written as Go durations (``1s``, ``6m0s``, ``12ms``), the format OpenAI uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_S = 60.0


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String(): ``12ms``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1.0:
        return f"{max(0, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    sec_text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours >= 1:
        return f"{int(hours)}h{int(minutes)}m{sec_text}"
    if minutes >= 1:
        return f"{int(minutes)}m{sec_text}"
    return sec_text


@dataclass
class Window:
    """One key's counters for the current minute."""

    started_at: float
    requests: int = 0
    tokens: int = 0


class RateWindows:
    """Requests-per-minute and tokens-per-minute budget per API key."""

    def __init__(self, rpm: int, tpm: int) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._windows: dict[str, Window] = {}

    def _window(self, key: str, now: float) -> Window:
        window = self._windows.get(key)
        if window is None or now - window.started_at >= WINDOW_S:
            window = Window(started_at=now)
            self._windows[key] = window
        return window

    def admit(self, key: str, tokens: int, now: float) -> float | None:
        """Count a request of ``tokens``; None if allowed, else seconds until the window resets."""
        window = self._window(key, now)
        if window.requests + 1 > self.rpm or window.tokens + tokens > self.tpm:
            return max(0.001, window.started_at + WINDOW_S - now)
        window.requests += 1
        window.tokens += tokens
        return None

    def headers(self, key: str, now: float) -> dict[str, str]:
        """The ``x-ratelimit-*`` header set for ``key`` at ``now``."""
        window = self._window(key, now)
        reset = go_duration(max(0.0, window.started_at + WINDOW_S - now))
        return {
            "x-ratelimit-limit-requests": str(self.rpm),
            "x-ratelimit-limit-tokens": str(self.tpm),
            "x-ratelimit-remaining-requests": str(max(0, self.rpm - window.requests)),
            "x-ratelimit-remaining-tokens": str(max(0, self.tpm - window.tokens)),
            "x-ratelimit-reset-requests": reset,
            "x-ratelimit-reset-tokens": reset,
        }


def retry_after_header(seconds: float) -> dict[str, str]:
    """``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``."""
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(round(seconds * 1000)),
    }
