"""What the request body says about the exchange: the model asked for, and whether it streams.

Read on the request path before forwarding, so it must be cheap: the body is parsed once with
orjson, and a body too large to parse there is only searched near its start and end. The body
itself is forwarded untouched.
"""

from __future__ import annotations

import re

import orjson

from sidecar.exchange import Exchange
from sidecar.observe.readers import MAX_JSON_BODY

__all__ = ["observe_request_body"]

_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')


def observe_request_body(ex: Exchange, body: bytes) -> None:
    """Model and stream flag from a JSON request body, which is forwarded untouched."""
    if not body or body.lstrip()[:1] != b"{":
        return
    if len(body) > MAX_JSON_BODY:  # too big to parse on the request path: look, don't parse
        head = body[:65536]
        model = _MODEL.search(head)
        ex.requested_model = model.group(1).decode("utf-8", "replace") if model else None
        ex.stream = bool(_STREAM_TRUE.search(head) or _STREAM_TRUE.search(body[-65536:]))
        return
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if isinstance(obj, dict):
        model = obj.get("model")
        ex.requested_model = model if isinstance(model, str) and model else None
        ex.stream = obj.get("stream") is True
