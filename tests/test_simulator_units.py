"""Pure parts of the simulator: prefix cache units, capacity hand-over, token counting."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from sidecar.simulator.accounts import Account, Accounts
from sidecar.simulator.cache import PrefixCache
from sidecar.simulator.capacity import Capacity
from sidecar.simulator.scenario import Scenario
from sidecar.simulator.tokens import count_tokens


@given(
    shared=st.text(max_size=600),
    first=st.text(max_size=200),
    second=st.text(max_size=200),
    unit=st.sampled_from([1, 4, 64]),
)
def test_cache_hits_are_whole_units_within_the_prompt(
    shared: str, first: str, second: str, unit: int
) -> None:
    cache = PrefixCache(unit=unit, chars_per_token=4, max_prefixes=10_000)
    a, b = shared + first, shared + second
    assert cache.lookup_and_store("k", a, count_tokens(a, 4)) == 0
    prompt = count_tokens(b, 4)
    hit = cache.lookup_and_store("k", b, prompt)
    assert hit % unit == 0 and 0 <= hit <= prompt
    assert hit >= (len(shared) // (4 * unit)) * unit


def test_cache_forgets_oldest_when_full() -> None:
    cache = PrefixCache(unit=1, chars_per_token=1, max_prefixes=3)
    cache.lookup_and_store("k", "abc", 3)
    cache.lookup_and_store("k", "xyz", 3)
    assert cache.lookup_and_store("k", "abc", 3) == 0


async def test_capacity_hands_slot_to_next_live_waiter() -> None:
    capacity = Capacity(1)
    assert capacity.try_acquire() is None
    gone, waiting = capacity.try_acquire(), capacity.try_acquire()
    assert gone is not None and waiting is not None and capacity.queued == 2
    capacity.abandon(gone)
    capacity.release()
    await asyncio.wait_for(waiting, 1)
    assert capacity.in_service == 1
    capacity.release()
    assert capacity.in_service == 0


async def test_capacity_slot_handed_to_leaver_is_passed_on() -> None:
    capacity = Capacity(1)
    capacity.try_acquire()
    leaver, next_one = capacity.try_acquire(), capacity.try_acquire()
    assert leaver is not None and next_one is not None
    capacity.release()  # slot goes to leaver...
    capacity.abandon(leaver)  # ...who leaves anyway: the slot must move on
    assert next_one.done() and capacity.in_service == 1


def test_limit_follows_balance_and_granted_spent_first() -> None:
    accounts = Accounts(Scenario(concurrency_per_usd=10.0, min_concurrency=2, max_concurrency=50))
    assert accounts.limit(Account(granted=0.0, topped_up=0.1)) == 2
    assert accounts.limit(Account(granted=1.0, topped_up=2.5)) == 35
    assert accounts.limit(Account(granted=0.0, topped_up=100.0)) == 50
    account = Account(granted=1.0, topped_up=2.0)
    account.charge(1.5)
    assert (account.granted, account.topped_up) == (0.0, 1.5)
    account.charge(5.0)
    assert account.balance == 0.0
