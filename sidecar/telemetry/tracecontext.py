"""W3C trace context across the sidecar: the client's ``traceparent`` in, the sidecar's span out.

The proxy calls ``trace_context`` once per exchange, right after building the upstream
request's headers, and only when OpenTelemetry export is on: otherwise headers pass untouched.
"""

from __future__ import annotations

import os

from multidict import CIMultiDict
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceFlags, TraceState

from sidecar.exchange import Exchange, TraceIds

_SAMPLED_RANDOM = TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID


class _HeaderGetter(Getter[CIMultiDict[str]]):
    def get(self, carrier: CIMultiDict[str], key: str) -> list[str] | None:
        values = carrier.getall(key, None)
        return list(values) if values else None

    def keys(self, carrier: CIMultiDict[str]) -> list[str]:
        return list(carrier.keys())


_GETTER = _HeaderGetter()
_PROPAGATOR = TraceContextTextMapPropagator()


def _random_id(bits: int) -> int:
    value = 0
    while value == 0:  # all-zero ids are invalid in W3C trace context
        value = int.from_bytes(os.urandom(bits // 8), "big")
    return value


def trace_context(ex: Exchange, headers: CIMultiDict[str]) -> None:
    """Fix the exchange's span ids (a child of the client's ``traceparent`` when valid, else a
    root) and send them upstream: ``traceparent`` names the sidecar's span as parent, the
    client's ``tracestate`` follows it; an invalid pair is replaced, never forwarded."""
    parent = trace.get_current_span(_PROPAGATOR.extract(headers, getter=_GETTER))
    context = parent.get_span_context()
    if context.is_valid:
        ids = TraceIds(
            context.trace_id,
            _random_id(64),
            context.span_id,
            context.trace_flags & _SAMPLED_RANDOM,  # the flags the SDK gives a child span
            tuple(context.trace_state.items()),
        )
    else:  # root spans are always sampled; children follow their parent's decision
        ids = TraceIds(_random_id(128), _random_id(64), None, _SAMPLED_RANDOM)
    ex.trace = ids
    headers.popall("traceparent", None)
    headers.popall("tracestate", None)
    headers["traceparent"] = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.flags:02x}"
    if ids.trace_state:
        headers["tracestate"] = TraceState(list(ids.trace_state)).to_header()
