"""What a realtime (WebSocket) session says about itself: model, usage, time to first token.

Fed a copy of each direction's bytes after they were relayed, like every reader. Server events
are JSON text; a byte search picks the few worth parsing (``session.created`` for the model
while none is known, ``response.done`` for usage, the first ``response.*.delta`` after a
``response.create``), so an audio delta costs a search, not a parse. Client frames are masked:
only a short prefix of each text message is unmasked, enough to spot ``response.create``.
Close frames are tracked in both directions: they decide how the session ended.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from sidecar.exchange import Exchange
from sidecar.observe.deflate import negotiated_deflate
from sidecar.observe.usage import from_realtime, summed
from sidecar.observe.websocket import CLOSE, TEXT, FrameReader

# The client's event type comes first in practice (the SDK and the API's examples put it
# there); 512 bytes also cover an event_id or two before it.
CLIENT_PREFIX = 512
_RESPONSE_CREATE = re.compile(rb'"type"\s*:\s*"response\.create"')
# Structural (unescaped quotes), so text inside a string value can never match it.
_DELTA = re.compile(rb'"type"\s*:\s*"response\.[a-z_.]+\.delta"')
_RESPONSE_DONE = b'"response.done"'
_SESSION_CREATED = b'"session.created"'
_RESPONSE = b'"response.'


class RealtimeObserver:
    """Both directions of one session, written onto its ``Exchange``."""

    kind = "websocket"  # the parse_error kind if the observer itself fails

    def __init__(self, ex: Exchange, extensions: str | None) -> None:
        deflate = negotiated_deflate(extensions)
        on = deflate is not None
        self.ex = ex
        self.close_seen = False  # a close frame went by, in either direction
        self._server = FrameReader(
            deflate=on, no_context_takeover=bool(deflate and deflate.server_no_context_takeover)
        )
        self._client = FrameReader(
            text_prefix=CLIENT_PREFIX,
            deflate=on,
            no_context_takeover=bool(deflate and deflate.client_no_context_takeover),
        )

    def from_upstream(self, chunk: bytes, now: float) -> None:
        reader = self._server
        for message in reader.feed(chunk):
            if message.opcode == TEXT:
                self._server_event(message.data, now)
            elif message.opcode == CLOSE:
                self.close_seen = True
        if reader.error is not None and self.ex.parse_error is None:
            self.ex.parse_error = reader.error

    def from_client(self, chunk: bytes, now: float) -> None:
        reader = self._client
        for message in reader.feed(chunk):
            if message.opcode == TEXT:
                if self.ex.response_requested_at is None and _RESPONSE_CREATE.search(
                    message.data, 0, CLIENT_PREFIX
                ):
                    self.ex.response_requested_at = now
            elif message.opcode == CLOSE:
                self.close_seen = True
        if reader.error is not None and self.ex.parse_error is None:
            self.ex.parse_error = reader.error

    def _server_event(self, data: bytes, now: float) -> None:
        ex = self.ex
        if _RESPONSE_DONE in data:
            event = self._parse(data)
            if event.get("type") == "response.done":
                response = event.get("response")
                usage = response.get("usage") if isinstance(response, dict) else None
                if isinstance(usage, dict):
                    ex.usage = summed(ex.usage, from_realtime(usage))
        elif (
            ex.first_token_at is None
            and ex.response_requested_at is not None
            and _RESPONSE in data
            and _DELTA.search(data)
        ):
            ex.first_token_at = now
        elif ex.reported_model is None and _SESSION_CREATED in data:
            event = self._parse(data)
            session = event.get("session")
            model = session.get("model") if isinstance(session, dict) else None
            if event.get("type") == "session.created" and isinstance(model, str) and model:
                ex.reported_model = model

    def _parse(self, data: bytes) -> dict[str, Any]:
        """The event as a dict; {} (and the parse error ``json``) when it is not JSON."""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            if self.ex.parse_error is None:
                self.ex.parse_error = "json"
            return {}
        return event if isinstance(event, dict) else {}
