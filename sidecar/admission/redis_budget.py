"""One concurrency budget kept in Redis: leases taken, renewed and returned by atomic scripts.

Each operation is one Lua script, so Redis runs it alone: no two sidecars can both see the
last free slot. Times come from Redis (``TIME``), never from the sidecars, so clock skew between
pods cannot stretch or shorten a lease.

Keys, all under one hash tag so the scripts also run on a Redis Cluster node:
``holders`` (zset: slot token → lease expiry, ms), ``queue`` (zset: waiting token → arrival
ticket), ``waiters`` (zset: waiting token → expiry, so a dead pod's place in the queue goes
away), ``ticket`` (the arrival counter). A release publishes on ``channel`` so waiting pods try
again at once instead of at their next poll.

Every call is bounded by ``timeout_s`` and any failure (refused, reset, timed out, an error
reply) is raised as ``BackendError``: the caller decides what to do without knowing Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

__all__ = ["BackendError", "RedisBudget", "connect"]

# Shared by every script: the server's clock in ms, then expired leases and waiters dropped.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holders, queue, waiters, ticket = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local pruned = redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', waiters, '-inf', now)) do
  redis.call('ZREM', waiters, gone)
  redis.call('ZREM', queue, gone)
end
local function keep(ms)
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ms) end
end
"""

# ARGV: token, limit, lease_ms, waiter_ttl_ms, channel. Returns {granted 1/0, holders}.
# A token is granted when its place in the queue (or the queue's length, if it is not queued)
# is below the number of free slots: nobody overtakes an earlier waiter of another pod.
_ACQUIRE = (
    _PRELUDE
    + """
local token, limit = ARGV[1], tonumber(ARGV[2])
local lease, waiter_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
if pruned > 0 then redis.call('PUBLISH', ARGV[5], '') end
local held = redis.call('ZCARD', holders)
local place = redis.call('ZRANK', queue, token)
local queued = place ~= false
if not queued then place = redis.call('ZCARD', queue) end
local granted = 0
if place < limit - held then
  if queued then
    redis.call('ZREM', queue, token)
    redis.call('ZREM', waiters, token)
  end
  redis.call('ZADD', holders, now + lease, token)
  held = held + 1
  granted = 1
else
  if not queued then redis.call('ZADD', queue, redis.call('INCR', ticket), token) end
  redis.call('ZADD', waiters, now + waiter_ttl, token)
end
keep(math.max(lease, waiter_ttl))
return {granted, held}
"""
)

# ARGV: channel, tokens... Returns holders left.
_RELEASE = (
    _PRELUDE
    + """
local freed = pruned
for i = 2, #ARGV do
  freed = freed + redis.call('ZREM', holders, ARGV[i])
  redis.call('ZREM', queue, ARGV[i])
  redis.call('ZREM', waiters, ARGV[i])
end
if freed > 0 then redis.call('PUBLISH', ARGV[1], '') end
return redis.call('ZCARD', holders)
"""
)

# ARGV: channel, lease_ms, tokens... Re-adds a token Redis lost (a restart without
# persistence), so the count stays true even if that briefly puts it above the limit; a token
# that was still waiting when its pod fell back to the local guard leaves the queue.
# Returns holders.
_RENEW = (
    _PRELUDE
    + """
local lease = tonumber(ARGV[2])
for i = 3, #ARGV do
  redis.call('ZADD', holders, now + lease, ARGV[i])
  redis.call('ZREM', queue, ARGV[i])
  redis.call('ZREM', waiters, ARGV[i])
end
if pruned > 0 then redis.call('PUBLISH', ARGV[1], '') end
if #ARGV > 2 then keep(lease) end
return redis.call('ZCARD', holders)
"""
)


class BackendError(Exception):
    """Redis did not answer in time or answered with an error; the message names which."""


def connect(url: str, timeout_s: float) -> Redis:
    """A client that fails fast: one quick retry (a pooled connection Redis closed), no backoff."""
    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
    )
    return client


class RedisBudget:
    """The budget named ``key``: at most ``limit`` unexpired leases of ``lease_s`` each."""

    def __init__(
        self,
        client: Redis,
        key: str,
        limit: int,
        lease_s: float,
        waiter_ttl_s: float,
        timeout_s: float,
    ) -> None:
        prefix = f"deepseek-sidecar:guard:{{{key}}}:"
        self._keys = [prefix + part for part in ("holders", "queue", "waiters", "ticket")]
        self.channel = prefix + "released"
        self._client = client
        self._limit = limit
        self._lease_ms = max(1, round(lease_s * 1000))
        self._waiter_ttl_ms = max(1, round(waiter_ttl_s * 1000))
        self._timeout_s = timeout_s
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)

    async def acquire(self, token: str) -> tuple[bool, int]:
        """Take a slot for ``token``, or keep its place in the queue; (granted, holders)."""
        args = (token, self._limit, self._lease_ms, self._waiter_ttl_ms, self.channel)
        granted, held = await self._call(self._acquire, args)
        return bool(granted), int(held)

    async def release(self, tokens: Sequence[str]) -> int:
        """Return the slots (or queue places) of ``tokens``; holders left."""
        return int(await self._call(self._release, (self.channel, *tokens)))

    async def renew(self, tokens: Sequence[str]) -> int:
        """Extend the leases of ``tokens`` by a full lease from now; holders."""
        return int(await self._call(self._renew, (self.channel, self._lease_ms, *tokens)))

    async def _call(self, script: Callable[..., Awaitable[Any]], args: Sequence[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await script(keys=self._keys, args=args)
        except TimeoutError:
            raise BackendError(f"no answer within {self._timeout_s:g}s") from None
        except (RedisError, OSError) as exc:
            raise BackendError(type(exc).__name__) from None

    async def listen(self, on_release: Callable[[], None], retry_s: float) -> None:
        """Call ``on_release`` for each release anywhere; reconnects forever (cancel to stop)."""
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    while True:
                        message = await pubsub.get_message(True, timeout=retry_s)
                        if message is not None:
                            on_release()
            except (RedisError, OSError, TimeoutError):
                await asyncio.sleep(retry_s)  # the renewer counts and reports the outage
