"""The account balance: parsing DeepSeek's ``/user/balance`` and polling it in the background.

``parse_balance`` is pure. ``BalancePoller`` is the only part that does I/O: one GET per
interval with the operator's key, reported through two callbacks so that this module knows
nothing about metrics. A failing poll is reported and the loop carries on; the key is never
put into a message, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

import aiohttp
import orjson

__all__ = ["BalancePoller", "BalanceReport", "parse_balance"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# The balance body is ~150 bytes per currency; anything past 64 KiB is not a balance.
_MAX_BODY_BYTES: Final = 64 * 1024
# ISO 4217 codes; anything else would be an unbounded label value.
_CURRENCY = re.compile(r"[A-Z]{3}")
# Printable ASCII without spaces: what a bearer token may contain (RFC 6750 §2.1, roughly).
_TOKEN = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class BalanceReport:
    """``is_available`` and ``total_balance`` per currency code, as the upstream reported."""

    is_available: bool
    total_balance: Mapping[str, float] = field(default_factory=dict)


def parse_balance(body: bytes) -> BalanceReport | None:
    """Parse a ``/user/balance`` body; None if it is not one (amounts may be strings or numbers).

    Example: ``{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00",
    "granted_balance":"10.00","topped_up_balance":"100.00"}]}``. Unknown fields are ignored.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("is_available"), bool):
        return None
    infos = data.get("balance_infos")
    if not isinstance(infos, list):
        return None
    totals: dict[str, float] = {}
    for info in infos:
        if not isinstance(info, dict):
            return None
        currency, amount = info.get("currency"), _amount(info.get("total_balance"))
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency) or amount is None:
            return None
        if currency in totals:
            return None
        totals[currency] = amount
    return BalanceReport(is_available=data["is_available"], total_balance=totals)


def _amount(raw: object) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class BalancePoller:
    """GETs ``url`` every ``interval_s`` and reports each result through a callback.

    Failure reasons passed to ``on_failure``: ``connect`` (no connection or transport error),
    ``timeout`` (no complete answer within ``timeout_s``), ``status`` (not 200), ``body``
    (not a balance). The first poll happens at ``start()``.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        api_key: str,
        interval_s: float,
        on_report: Callable[[BalanceReport], None],
        on_failure: Callable[[str], None],
        timeout_s: float = 10.0,
    ) -> None:
        if not _TOKEN.fullmatch(api_key):
            raise ValueError("api_key must be non-empty printable ASCII without spaces")
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be a finite number > 0, got {interval_s}")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s}")
        self._session = session
        self._url = url
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._on_report = on_report
        self._on_failure = on_failure
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"BalancePoller(url={self._url!r}, interval_s={self._interval_s})"

    def start(self) -> None:
        """Begin polling in a background task (idempotent); needs a running event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="balance-poll")

    async def stop(self) -> None:
        """Stop polling and wait for the task to end (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def poll_once(self) -> None:
        """One GET, reported through exactly one of the two callbacks; never raises."""
        result = await self._fetch()
        if isinstance(result, BalanceReport):
            self._call(self._on_report, result)
        else:
            log.warning("balance poll failed: %s", result)
            self._call(self._on_failure, result)

    async def _run(self) -> None:
        while True:
            started_at = time.monotonic()
            await self.poll_once()
            await asyncio.sleep(max(self._interval_s - (time.monotonic() - started_at), 0.0))

    async def _fetch(self) -> BalanceReport | str:
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._session.get(
                    self._url,
                    headers=self._headers,
                    allow_redirects=False,  # never carry the key to another address
                    auto_decompress=True,  # the proxy's session may relay bytes untouched
                ) as response:
                    if response.status != 200:
                        return "status"
                    body = bytearray()
                    async for chunk in response.content.iter_chunked(16 * 1024):
                        body += chunk
                        if len(body) > _MAX_BODY_BYTES:
                            return "body"
        except TimeoutError:  # also aiohttp's ServerTimeoutError, a TimeoutError subclass
            return "timeout"
        except (aiohttp.ClientError, OSError, ValueError):
            # ValueError: a malformed URL; nothing here can carry the key, but log no text.
            return "connect"
        report = parse_balance(bytes(body))
        return "body" if report is None else report

    @staticmethod
    def _call(callback: Callable[[_T], None], value: _T) -> None:
        try:
            callback(value)
        except Exception:
            log.exception("balance callback failed")
