"""The simulator's shared, mutable state, stored on the app under one typed key."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field

from aiohttp import web

from sidecar.simulator.accounts import Accounts
from sidecar.simulator.cache import PrefixCache
from sidecar.simulator.capacity import Capacity
from sidecar.simulator.ratelimit import RateWindows
from sidecar.simulator.scenario import Scenario


@dataclass
class SimState:
    """Everything a handler needs; faults draw from ``fault_rng`` in request arrival order."""

    scenario: Scenario
    seed: int
    fault_rng: random.Random = field(init=False)
    cache: PrefixCache = field(init=False)
    accounts: Accounts = field(init=False)
    capacity: Capacity = field(init=False)
    windows: RateWindows = field(init=False)
    fingerprint: str = field(init=False)
    started_at: float = field(init=False, default_factory=time.monotonic)  # outages count from it

    def __post_init__(self) -> None:
        s = self.scenario
        self.fault_rng = random.Random(self.seed)
        self.cache = PrefixCache(s.cache_unit, s.chars_per_token, s.cache_max_prefixes)
        self.accounts = Accounts(s)
        self.capacity = Capacity(s.soft_capacity)
        self.windows = RateWindows(s.rpm_limit, s.tpm_limit)
        self.fingerprint = uuid.UUID(int=random.Random(f"fp|{self.seed}").getrandbits(128)).hex


STATE = web.AppKey("simulator_state", SimState)
