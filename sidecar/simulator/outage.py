"""Scheduled outages: windows of time in which every request gets one error status at once.

Lets the demo and tests show a provider going down and coming back (a breaker opening, traffic
moving to a fallback, then returning) on a schedule rather than at random.
"""

from __future__ import annotations

from sidecar.simulator.scenario import Scenario

OUTAGE_MESSAGES = {
    429: ("Rate limit reached, please retry later", "rate_limit_error"),
    500: ("Server Error", "server_error"),
    502: ("Bad Gateway", "server_error"),
    503: ("Server Overloaded", "server_error"),
    504: ("Gateway Timeout", "server_error"),
}


def in_outage(scenario: Scenario, elapsed_s: float) -> bool:
    """True ``outage_start_s`` after start for ``outage_s``, again every ``outage_every_s``."""
    if scenario.outage_s <= 0 or elapsed_s < scenario.outage_start_s:
        return False
    since = elapsed_s - scenario.outage_start_s
    if scenario.outage_every_s > 0:
        since %= scenario.outage_every_s
    return since < scenario.outage_s
