"""Latency model: time to first token and the decode interval.

TTFT = base + prefill cost per *uncached* prompt token (cache hits skip prefill), scaled up by the
load on the simulated cluster (``concurrency_penalty`` at full soft capacity: +25 % by default,
matching the 15-30 % rise seen under bursts), with a little seeded jitter.
"""

from __future__ import annotations

import random

from sidecar.simulator.scenario import Scenario


def _jittered(rng: random.Random, value: float, jitter: float) -> float:
    """``value`` times a factor drawn uniformly from [1 - jitter, 1 + jitter]."""
    return max(0.0, value * rng.uniform(1.0 - jitter, 1.0 + jitter))


def load_factor(scenario: Scenario, in_service: int) -> float:
    """1 + penalty * utilisation of the soft capacity (capped at 1)."""
    utilisation = min(1.0, in_service / scenario.soft_capacity)
    return 1.0 + scenario.concurrency_penalty * utilisation


def ttft_s(scenario: Scenario, rng: random.Random, miss_tokens: int, in_service: int) -> float:
    """Seconds between the start of service and the first generated token."""
    base = scenario.ttft_base_s + scenario.prefill_s_per_token * miss_tokens
    return _jittered(rng, base * load_factor(scenario, in_service), scenario.jitter)


def decode_interval_s(scenario: Scenario, rng: random.Random, in_service: int) -> float:
    """Seconds between two generated tokens of one response."""
    base = scenario.decode_s_per_token * load_factor(scenario, in_service)
    return _jittered(rng, base, scenario.jitter)
