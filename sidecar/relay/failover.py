"""Sending one exchange to the primary and, when it fails before answering, to its fallbacks.

Every decision is taken before the client got a byte: on the status line of the upstream's
answer (after that upstream's own retries), or on a connect failure or timeout. A fallback
gets the request with its own key and the mapped model (the one change ever made to a body).
When no fallback answers either, the client gets the primary's own answer, exactly as if no
fallback were configured; only when the primary was never asked (its breaker was open) does
the last fallback's answer go out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from multidict import CIMultiDict
from yarl import URL

from sidecar.admission.breaker import Ticket
from sidecar.admission.fallback import (
    BREAKER_OPEN,
    FAILOVER_ROUTES,
    Router,
    Target,
    failure_kind,
)
from sidecar.exchange import Exchange, RateLimits
from sidecar.observe.readers import MAX_JSON_BODY
from sidecar.relay.client import UpstreamClient, UpstreamResponse
from sidecar.relay.errors import SidecarError
from sidecar.relay.headers import fallback_request_headers
from sidecar.relay.upstream import Attempt, UpstreamFailure, send_with_retries

__all__ = ["Failover", "rewrite_model"]

_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.){0,400})"')


def rewrite_model(body: bytes, old: str, new: str) -> bytes | None:
    """``body`` with its top-level ``model`` changed from ``old`` to ``new``; None if unsure.

    When the body holds exactly one ``"model": "..."`` string field and it is ``old``, only
    those bytes change (whitespace, key order and numbers stay as the client wrote them);
    otherwise the JSON is parsed and written again. ``new`` needs no escaping (checked when the
    configuration is read).
    """
    matches = list(_MODEL_FIELD.finditer(body))
    if len(matches) == 1 and matches[0].group(1) == orjson.dumps(old)[1:-1]:
        start, end = matches[0].span(1)
        return body[:start] + new.encode() + body[end:]
    if len(body) > MAX_JSON_BODY:
        return None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("model") != old:
        return None
    obj["model"] = new
    return orjson.dumps(obj)


@dataclass
class _Answer:
    """One upstream's answer: a response to relay or a failure, with what it observed."""

    target: Target
    response: UpstreamResponse | None
    failure: UpstreamFailure | None
    limits: RateLimits

    def close(self) -> None:
        if self.response is not None:
            self.response.close()


@dataclass
class _Request:
    """What every attempt of one exchange shares."""

    ex: Exchange
    model: str  # as the client asked for it
    method: str
    path_qs: str
    body: bytes
    headers: CIMultiDict[str]
    retry_enabled: bool
    bodies: dict[str, bytes | None] = field(default_factory=dict)  # per fallback, rewritten
    segments: list[tuple[str, int]] = field(default_factory=list)  # (upstream, first attempt)

    def body_for(self, target: Target) -> bytes | None:
        """The body for ``target``: the client's for the primary, else with the mapped model."""
        if target.fallback is None:
            return self.body
        if target.name not in self.bodies:
            new = target.fallback.models[self.model]
            self.bodies[target.name] = rewrite_model(self.body, self.model, new)
        return self.bodies[target.name]


class Failover:
    """Tries the router's targets in order; ``on_moved(route, from, to)`` moves the gauge."""

    def __init__(
        self,
        router: Router,
        attempt: Attempt,
        client: Callable[[], UpstreamClient],
        primary_base: str,
        on_moved: Callable[[str, str, str], None],
    ) -> None:
        self.router = router
        self.attempt = attempt
        self.client = client
        self.primary_base = primary_base
        self.on_moved = on_moved

    def eligible(self, ex: Exchange, method: str) -> bool:
        return self.router.eligible(method, ex.route, ex.requested_model)

    async def send(
        self,
        ex: Exchange,
        method: str,
        path_qs: str,
        body: bytes,
        headers: CIMultiDict[str],
        *,
        retry_enabled: bool,
    ) -> UpstreamResponse:
        """The response to relay, or ``UpstreamFailure`` (its envelope is what the client gets)."""
        assert ex.requested_model is not None  # eligible() made sure
        req = _Request(ex, ex.requested_model, method, path_qs, body, headers, retry_enabled)
        answers: list[_Answer] = []
        chosen: _Answer | None = None
        try:
            chosen = await self._walk(req, answers)
        finally:
            self._settle(req, answers, chosen)
        if chosen.failure is not None:
            if ex.fallback_from is not None:
                chosen.failure.response.headers["x-sidecar-upstream"] = ex.upstream
            raise chosen.failure
        assert chosen.response is not None
        return chosen.response

    async def _walk(self, req: _Request, answers: list[_Answer]) -> _Answer:
        router = self.router
        index, target, ticket = 0, router.primary, router.admit(router.primary)
        reason: str | None = None
        if ticket is None:
            step = self._next(req, 0, BREAKER_OPEN)
            if step is None:  # every usable fallback is open too: the primary it is
                ticket = None
            else:
                index, target, ticket, reason = (*step, BREAKER_OPEN)
        while True:
            if reason is not None:
                self._switch(req, target, reason)
            answer = await self._ask(req, target, ticket)
            answers.append(answer)
            kind = _kind(answer)
            router.verdict(target, ticket, kind)
            if kind is None:
                return answer
            step = self._next(req, index, kind)
            if step is None:
                primary = answers[0] if answers[0].target is router.primary else None
                return primary or answer
            index, target, ticket = step
            reason = kind

    def _next(self, req: _Request, index: int, reason: str) -> tuple[int, Target, Ticket] | None:
        """The next fallback that acts on ``reason``, maps the model and whose breaker admits."""
        for i, target in self.router.after(index, req.model, reason):
            if req.body_for(target) is None:
                continue  # the model could not be rewritten safely: never send it as it is
            ticket = self.router.admit(target)
            if ticket is not None:
                return i, target, ticket
        return None

    def _switch(self, req: _Request, target: Target, reason: str) -> None:
        """The exchange now belongs to ``target``: labels, gauge, and the mapped model."""
        ex = req.ex
        ex.fallbacks.append((ex.upstream, target.name, reason))
        self._move(ex, target.name)
        if ex.fallback_from is None:
            ex.fallback_from = self.router.primary.name
        ex.requested_model = target.model_for(req.model)

    def _move(self, ex: Exchange, name: str) -> None:
        if name != ex.upstream:
            self.on_moved(ex.route, ex.upstream, name)
            ex.upstream = name

    async def _ask(self, req: _Request, target: Target, ticket: Ticket | None) -> _Answer:
        ex = req.ex
        url, headers, body = self._request_for(req, target)
        ex.limits = RateLimits()
        req.segments.append((target.name, len(ex.attempt_codes)))
        response: UpstreamResponse | None = None
        failure: UpstreamFailure | None = None
        try:
            response = await send_with_retries(
                self.attempt,
                self.client(),
                ex,
                req.method,
                url,
                headers,
                body,
                retry_enabled=req.retry_enabled,
            )
        except UpstreamFailure as exc:
            failure = exc
        except BaseException:
            self.router.abandon(target, ticket)
            raise
        return _Answer(target, response, failure, ex.limits)

    def _request_for(self, req: _Request, target: Target) -> tuple[URL, CIMultiDict[str], bytes]:
        fallback, body = target.fallback, req.body_for(target)
        assert body is not None  # _next() skipped targets without a body
        if fallback is None:
            return URL(self.primary_base + req.path_qs, encoded=True), req.headers, body
        _, sep, query = req.path_qs.partition("?")
        path = fallback.upstream + FAILOVER_ROUTES[req.ex.route] + sep + query
        headers = fallback_request_headers(req.headers, fallback.api_key)
        return URL(path, encoded=True), headers, body

    def _settle(self, req: _Request, answers: list[_Answer], chosen: _Answer | None) -> None:
        """Attribute attempts and observations to the upstream whose answer is relayed.

        Runs when the walk ends, answered or cancelled; closes every answer not relayed.
        """
        ex = req.ex
        if chosen is not None:
            self._move(ex, chosen.target.name)
            ex.limits = chosen.limits
            if chosen.target.fallback is None:  # the primary's own answer after all
                ex.fallback_from = None
                ex.requested_model = req.model
        codes, ends = ex.attempt_codes, [start for _, start in req.segments[1:]]
        segments = [
            (name, codes[start:end])
            for (name, start), end in zip(req.segments, [*ends, len(codes)], strict=True)
        ]
        ex.attempt_codes = [c for name, cs in segments if name == ex.upstream for c in cs]
        ex.prior_attempts = [(name, c) for name, cs in segments if name != ex.upstream for c in cs]
        for answer in answers:
            if answer is not chosen:
                answer.close()


def _kind(answer: _Answer) -> str | None:
    if answer.response is not None:
        return failure_kind(answer.response.status)
    assert answer.failure is not None
    return failure_kind(None, timed_out=answer.failure.kind is SidecarError.UPSTREAM_TIMEOUT)
