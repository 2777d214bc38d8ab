"""What a realtime session says about itself, read from a copy of its frames."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from sidecar.exchange import Exchange, Usage
from sidecar.observe.realtime import RealtimeObserver
from tests.fake_realtime import SESSION_CREATED, USAGE, event
from tests.ws_frames import CLOSE, TEXT, Deflater, close_payload, frame

MASK = b"\x0f\xf0\x55\xaa"


def session(extensions: str | None = None) -> tuple[Exchange, RealtimeObserver]:
    ex = Exchange("r", "GET", "realtime", 10.0, datetime.now(UTC), stream=True)
    return ex, RealtimeObserver(ex, extensions)


def server(text: str) -> bytes:
    return frame(TEXT, text.encode())


def client(text: str) -> bytes:
    return frame(TEXT, text.encode(), mask=MASK)


DELTA = event("response.output_text.delta", delta="hi")
DONE = event("response.done", response={"status": "completed", "usage": USAGE})


def test_usage_is_summed_over_the_session_and_ttft_starts_at_response_create() -> None:
    ex, observer = session()
    observer.from_upstream(server(SESSION_CREATED), 10.1)
    observer.from_upstream(server(DELTA), 10.2)  # no response.create yet: not a first token
    observer.from_client(client('{"type":"response.create","response":{}}'), 11.0)
    observer.from_upstream(server(DELTA) + server(DONE), 11.5)
    observer.from_client(client('{"type":"response.create"}'), 12.0)
    observer.from_upstream(server(DELTA) + server(DONE), 12.1)
    assert ex.usage == Usage(input=200, output=60, cache_hit=128, cache_miss=72)
    assert ex.reported_model == "gpt-realtime"
    assert ex.ttft_s == 0.5  # from the first response.create, not from the handshake
    assert ex.parse_error is None and not observer.close_seen


def test_text_that_merely_mentions_an_event_type_is_not_that_event() -> None:
    ex, observer = session()
    quoted = orjson.dumps({"type": "conversation.item.added", "text": '"type":"response.create"'})
    observer.from_client(frame(TEXT, quoted, mask=MASK), 1.0)
    assert ex.response_requested_at is None
    observer.from_client(client('{"type":"response.create"}'), 2.0)
    mention = event("conversation.item.added", text='{"type":"response.output_text.delta"}')
    observer.from_upstream(server(mention), 3.0)
    assert ex.first_token_at is None


def test_close_frames_in_either_direction_are_seen() -> None:
    for feed in ("from_client", "from_upstream"):
        _, observer = session()
        mask = MASK if feed == "from_client" else None
        getattr(observer, feed)(frame(CLOSE, close_payload(1000), mask=mask), 1.0)
        assert observer.close_seen, feed


def test_a_broken_usage_event_is_a_json_parse_error() -> None:
    ex, observer = session()
    observer.from_upstream(server('{"type":"response.done", nope'), 1.0)
    assert ex.usage is None and ex.parse_error == "json"


def test_compressed_sessions_are_observed() -> None:
    ex, observer = session("permessage-deflate; client_max_window_bits=15")
    to_client, to_server = Deflater(), Deflater()
    for _ in range(2):
        create = to_server.message(b'{"type":"response.create"}')
        observer.from_client(frame(TEXT, create, rsv1=True, mask=MASK), 1.0)
        done = to_client.message(DONE.encode())
        observer.from_upstream(frame(TEXT, done, rsv1=True), 2.0)
    assert ex.usage is not None and ex.usage.input == 200
    assert ex.response_requested_at == 1.0 and ex.parse_error is None
