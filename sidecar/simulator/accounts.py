"""Accounts: balance per API key, the balance-based concurrency limit, and billing.

DeepSeek's real limit scales with the remaining balance and shows only in the 429 message, so the
simulator does the same: ``limit = clamp(floor(balance * concurrency_per_usd))``. Every served
request is billed at DeepSeek's peak prices (one price set, no off-peak window: the simulator's
clock is not the billing clock); granted balance is spent before topped-up balance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sidecar.simulator.scenario import Scenario

# USD per 1M tokens (cache hit, cache miss, output), peak prices from the wire spec §7.
_FLASH = (0.006, 0.30, 1.20)
_PRO = (0.044, 1.32, 3.96)


def prices_for(model: str) -> tuple[float, float, float]:
    """Price triple of a model; every legacy name is billed as Flash."""
    return _PRO if "pro" in model else _FLASH


@dataclass
class Account:
    """One API key's money and in-flight count (queued requests count too, as at DeepSeek)."""

    granted: float
    topped_up: float
    in_flight: int = 0

    @property
    def balance(self) -> float:
        return max(0.0, self.granted) + max(0.0, self.topped_up)

    def charge(self, usd: float) -> None:
        """Take ``usd`` from the granted balance first, then the topped-up one (floor 0)."""
        from_granted = min(usd, max(0.0, self.granted))
        self.granted -= from_granted
        self.topped_up = max(0.0, self.topped_up - (usd - from_granted))


class Accounts:
    """All accounts of one simulator, created on first use with the scenario's balance."""

    def __init__(self, scenario: Scenario) -> None:
        self._scenario = scenario
        self._accounts: dict[str, Account] = {}

    def get(self, api_key: str) -> Account:
        account = self._accounts.get(api_key)
        if account is None:
            s = self._scenario
            account = Account(granted=s.granted_balance_usd, topped_up=s.initial_balance_usd)
            self._accounts[api_key] = account
        return account

    def limit(self, account: Account) -> int:
        """Concurrency limit that the current balance buys."""
        s = self._scenario
        bought = math.floor(account.balance * s.concurrency_per_usd)
        return max(s.min_concurrency, min(s.max_concurrency, bought))

    def cost(self, model: str, hit: int, miss: int, output: int) -> float:
        """USD for one request's tokens."""
        p_hit, p_miss, p_out = prices_for(model)
        usd = (hit * p_hit + miss * p_miss + output * p_out) / 1_000_000
        return usd * self._scenario.price_multiplier
