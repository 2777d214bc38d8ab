"""Provider fallback: the ``[[fallback]]`` tables, and which upstream an exchange tries next.

Opt-in and narrow on purpose. Only ``chat_completions`` and ``completions`` fail over, only
for a requested model that a fallback maps, and only before anything reached the client (the
proxy decides on the upstream's status line, or on a connect failure or timeout, after the
primary's own retries). The fallback gets its own key and the mapped model name; nothing of
the client's credentials ever leaves for another provider.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from time import monotonic
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from sidecar.admission.breaker import Breaker, State, Ticket

__all__ = [
    "FAILOVER_ROUTES",
    "KINDS",
    "Fallback",
    "FallbackConfigError",
    "Router",
    "Target",
    "failure_kind",
    "parse_fallbacks",
]

KINDS = ("429", "5xx", "connect", "timeout")
BREAKER_OPEN = "breaker_open"
# The OpenAI-compatible routes whose request shape every provider shares, and the path each
# takes on a fallback (its ``upstream`` already carries the version prefix, e.g. ``/v1``).
FAILOVER_ROUTES: Mapping[str, str] = MappingProxyType(
    {"chat_completions": "/chat/completions", "completions": "/completions"}
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Model names are spliced into a JSON string as they are: no quote, backslash or control char.
_MODEL = re.compile(r"[^\"\\\x00-\x1f]{1,200}")
_KEYS = frozenset({"name", "upstream", "api_key_env", "api_key_file", "on", "models"})


class FallbackConfigError(ValueError):
    """A ``[[fallback]]`` table that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class Fallback:
    """One fallback provider. ``api_key`` is resolved at start and never shown (``masked``)."""

    name: str
    upstream: str
    api_key: str = field(repr=False)
    on: frozenset[str]
    models: Mapping[str, str]
    key_source: str  # "env NAME" or "file PATH": what check-config may show

    def masked(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "upstream": self.upstream,
            "api_key": "***",
            "api_key_from": self.key_source,
            "on": [kind for kind in KINDS if kind in self.on],
            "models": dict(self.models),
        }


def parse_fallbacks(raw: Any, environ: Mapping[str, str]) -> tuple[Fallback, ...]:
    """The ``fallback`` array of tables from the TOML file, in order; keys resolved now."""
    if not isinstance(raw, list):
        raise FallbackConfigError("fallback: expected [[fallback]] tables")
    out: list[Fallback] = []
    for i, table in enumerate(raw):
        where = f"fallback[{i}]"
        if not isinstance(table, dict):
            raise FallbackConfigError(f"{where}: expected a table")
        out.append(_one(table, where, environ))
    names = [fb.name for fb in out]
    for name in names:
        if names.count(name) > 1:
            raise FallbackConfigError(f"fallback: name {name!r} is used twice")
    return tuple(out)


def _one(table: dict[str, Any], where: str, environ: Mapping[str, str]) -> Fallback:
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise FallbackConfigError(f"{where}: unknown key {unknown[0]!r}")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise FallbackConfigError(
            f"{where}.name: invalid value {name!r} (letters, digits, '.', '_', '-'; up to 64)"
        )
    return Fallback(
        name=name,
        upstream=_upstream(table.get("upstream"), f"{where}.upstream"),
        api_key=(key := _key(table, where, environ))[0],
        key_source=key[1],
        on=_on(table.get("on", list(KINDS)), f"{where}.on"),
        models=_models(table.get("models"), f"{where}.models"),
    )


def _upstream(raw: Any, where: str) -> str:
    text = raw.strip().rstrip("/") if isinstance(raw, str) else ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FallbackConfigError(f"{where}: invalid value {raw!r} (expected an http(s):// URL)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise FallbackConfigError(
            f"{where}: invalid value {raw!r} (no query, fragment or credentials in the URL)"
        )
    return text


def _key(table: dict[str, Any], where: str, environ: Mapping[str, str]) -> tuple[str, str]:
    env, path = table.get("api_key_env"), table.get("api_key_file")
    if (env is None) == (path is None):
        raise FallbackConfigError(f"{where}: set exactly one of api_key_env, api_key_file")
    if env is not None:
        if not isinstance(env, str) or not env:
            raise FallbackConfigError(f"{where}.api_key_env: invalid value {env!r}")
        key = environ.get(env, "").strip()
        if not key:
            raise FallbackConfigError(
                f"{where}.api_key_env: environment variable {env!r} is unset or empty"
            )
        return key, f"env {env}"
    if not isinstance(path, str) or not path:
        raise FallbackConfigError(f"{where}.api_key_file: invalid value {path!r}")
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise FallbackConfigError(
            f"{where}.api_key_file: cannot read {path!r} ({exc.strerror})"
        ) from None
    if not key:
        raise FallbackConfigError(f"{where}.api_key_file: {path!r} is empty")
    return key, f"file {path}"


def _on(raw: Any, where: str) -> frozenset[str]:
    if not isinstance(raw, list) or not raw:
        raise FallbackConfigError(f"{where}: invalid value {raw!r} (a non-empty list)")
    for kind in raw:
        if kind not in KINDS:
            raise FallbackConfigError(
                f"{where}: invalid value {kind!r} (expected any of {', '.join(KINDS)})"
            )
    return frozenset(raw)


def _models(raw: Any, where: str) -> Mapping[str, str]:
    if not isinstance(raw, dict) or not raw:
        raise FallbackConfigError(f"{where}: expected a table of requested = fallback model names")
    for requested, mapped in raw.items():
        if not isinstance(mapped, str) or not _MODEL.fullmatch(mapped):
            raise FallbackConfigError(f"{where}.{requested}: invalid value {mapped!r}")
    return MappingProxyType(dict(raw))


def failure_kind(status: int | None, timed_out: bool = False) -> str | None:
    """The ``on`` kind of one upstream answer: None when it is not a failure.

    ``status`` None means no HTTP answer at all: a connect failure, or a timeout.
    """
    if status is None:
        return "timeout" if timed_out else "connect"
    if status == 429:
        return "429"
    if 500 <= status <= 599:
        return "5xx"
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """An upstream one attempt goes to; ``fallback`` is None for the primary."""

    name: str
    fallback: Fallback | None = None

    def model_for(self, requested: str) -> str | None:
        return requested if self.fallback is None else self.fallback.models.get(requested)


class Router:
    """The primary and its fallbacks in order, each with a breaker.

    ``on_state`` receives ``(upstream, state)`` on every breaker change (the gauge).
    Breakers count the failure kinds that some fallback acts on; the others are the upstream's
    answer as usual.
    """

    def __init__(
        self,
        primary: str,
        fallbacks: tuple[Fallback, ...],
        failures: int,
        cooldown_s: float,
        on_state: Callable[[str, State], None],
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.targets = (Target(primary), *(Target(fb.name, fb) for fb in fallbacks))
        self.counted = frozenset().union(*(fb.on for fb in fallbacks))
        self.breakers = {
            t.name: Breaker(failures, cooldown_s, clock or monotonic, partial(on_state, t.name))
            for t in self.targets
        }
        for target in self.targets:
            on_state(target.name, State.CLOSED)

    @property
    def primary(self) -> Target:
        return self.targets[0]

    def eligible(self, method: str, route: str, model: str | None) -> bool:
        """True when this request could ever fail over (else it takes the plain path)."""
        if method != "POST" or route not in FAILOVER_ROUTES or model is None:
            return False
        return any(t.fallback is not None and model in t.fallback.models for t in self.targets)

    def after(self, index: int, model: str, reason: str) -> Iterator[tuple[int, Target]]:
        """Fallbacks after ``targets[index]`` that map ``model`` and act on ``reason``."""
        for i in range(index + 1, len(self.targets)):
            fb = self.targets[i].fallback
            if fb is None or model not in fb.models:
                continue
            if reason == BREAKER_OPEN or reason in fb.on:
                yield i, self.targets[i]

    def admit(self, target: Target) -> Ticket | None:
        return self.breakers[target.name].admit()

    def verdict(self, target: Target, ticket: Ticket | None, kind: str | None) -> None:
        """Report one attempt's answer: success, a counted failure, or (client gone) none."""
        if ticket is None:
            return
        breaker = self.breakers[target.name]
        if kind is None:
            breaker.succeeded(ticket)
        elif kind in self.counted:
            breaker.failed(ticket)
        else:
            breaker.abandoned(ticket)

    def abandon(self, target: Target, ticket: Ticket | None) -> None:
        """The attempt ended without an answer to judge (the client went away)."""
        if ticket is not None:
            self.breakers[target.name].abandoned(ticket)
