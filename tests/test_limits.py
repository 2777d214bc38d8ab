"""Rate-limit headers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sidecar.exchange import Exchange
from sidecar.observe.limits import observe_headers, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1h2m3.5s", 3723.5),
        ("17.3s", 17.3),
        ("2", 2.0),
        ("0.5", 0.5),
        ("", None),
        ("soon", None),
        ("5x", None),
        ("1s2", None),
    ],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    result = parse_duration(text)
    assert result == (pytest.approx(seconds) if seconds is not None else None)


def test_headers_recorded_and_garbage_ignored() -> None:
    ex = Exchange("r", "POST", "chat_completions", 0.0, datetime.now(UTC))
    observe_headers(
        ex,
        {
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-remaining-requests": "oops",
            "x-ratelimit-reset-tokens": "40ms",
            "retry-after": "2",
            "x-ds-trace-id": "abc",
        },
        datetime.now(UTC),
    )
    assert ex.limits.limit == {"requests": 5000.0}
    assert ex.limits.remaining == {}
    assert ex.limits.reset_s == {"tokens": pytest.approx(0.04)}
    assert ex.limits.retry_after_s == 2.0
    assert ex.upstream_trace_id == "abc"
