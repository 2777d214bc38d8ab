"""A DeepSeek-compatible upstream simulator.

It speaks DeepSeek's wire format byte for byte (key order, framing, keep-alives, gzip) so the
sidecar, its tests and the demo can run without network access or an API key, and so that queueing,
429s, aborts and cache hits can be produced on demand and deterministically under a seed.
"""

from sidecar.simulator.scenario import Scenario, ScenarioError, load_scenario
from sidecar.simulator.server import build_app

__all__ = ["Scenario", "ScenarioError", "build_app", "load_scenario"]
