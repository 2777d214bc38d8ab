"""Bounded label values: routes from paths, models from user-supplied names.

Label values that come from user input pass through here so every label has a closed or
capped set of values. Overflow becomes ``other``; nothing is ever evicted, so a series never
changes meaning mid-flight.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ROUTES = (
    "chat_completions",
    "completions",
    "anthropic_messages",
    "responses",
    "models",
    "balance",
    "realtime",
    "other",
)
USAGE_ROUTES = frozenset({"chat_completions", "completions", "anthropic_messages", "responses"})

_EXACT_ROUTES = {
    "/user/balance": "balance",
    "/anthropic/v1/messages": "anthropic_messages",
    "/anthropic/messages": "anthropic_messages",
    "/v1/messages": "anthropic_messages",
    "/realtime": "realtime",
    "/v1/realtime": "realtime",
}
_PREFIXED_ROUTES = {
    "/chat/completions": "chat_completions",
    "/completions": "completions",
    "/responses": "responses",
    "/models": "models",
}
_PREFIXES = ("", "/v1", "/beta")
_ROUTE_TABLE = _EXACT_ROUTES | {
    prefix + path: route
    for path, route in _PREFIXED_ROUTES.items()
    for prefix in _PREFIXES
    if not (prefix == "/beta" and route in ("responses", "models"))
}
_ROUTE_TABLE["/v1/responses"] = "responses"
_ROUTE_TABLE["/v1/models"] = "models"


def route_of(path: str) -> str:
    """Classify a request path (query string excluded) into one of ``ROUTES``."""
    return _ROUTE_TABLE.get(path.rstrip("/") or "/", "other")


NO_MODEL = "none"
OTHER = "other"
_PLAUSIBLE_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}")


class ModelLabels:
    """Map model names to label values: listed names, then first-come up to ``cap``, then other."""

    def __init__(self, known: Iterable[str], cap: int) -> None:
        self._known = frozenset(known)
        self._seen: set[str] = set()
        self._cap = cap

    def label(self, model: str | None) -> str:
        if not model:
            return NO_MODEL
        if model in self._known or model in self._seen:
            return model
        if len(self._seen) < self._cap and _PLAUSIBLE_MODEL.fullmatch(model):
            self._seen.add(model)
            return model
        return OTHER
