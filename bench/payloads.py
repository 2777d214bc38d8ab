"""Deterministic DeepSeek-shaped bodies shared by the bench upstream and the load generator.

Both sides build the same bytes from the same parameters, so the load generator can check
that every relayed response is complete and byte-identical to what the upstream sent.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import orjson

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/deepseek-chat-nonstream.json"
STREAM_ID = "3c9e41d2-8b7a-4f0e-9d61-2a5b7c0e4f18"
FINGERPRINT = "fp_4b1e9c0d7a_prod0820_fp8_kvcache"
WORDS = ("Sure", "!", " Here", " is", " a", " short", " answer", " about", " the", " moon", ".")

# Headers the load generator sends to ask the upstream for a given stream shape.
CHUNKS_HEADER = "x-bench-chunks"
INTERVAL_HEADER = "x-bench-interval-ms"

REQUEST_JSON = orjson.dumps(
    {
        "model": "deepseek-chat",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Tell me something short about the moon."},
        ],
        "stream": False,
    }
)
REQUEST_STREAM = orjson.dumps(
    {
        **orjson.loads(REQUEST_JSON),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
)


@cache
def json_body() -> bytes:
    """The non-streaming response: the wire fixture padded to ~600 bytes (pretty-printed)."""
    obj = orjson.loads(FIXTURE.read_bytes())
    obj["choices"][0]["message"]["content"] = (
        "Hello! How can I help you today? The moon is Earth's only natural satellite, "
        "about 384,400 km away."
    )
    return orjson.dumps(obj)


def _chunk(index: int, delta: dict[str, str], finish: str | None, usage: object) -> bytes:
    obj = {
        "id": STREAM_ID,
        "object": "chat.completion.chunk",
        "created": 1764850123,
        "model": "deepseek-chat",
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


@cache
def sse_events(chunks: int) -> tuple[bytes, ...]:
    """``chunks`` content events (the last one carries usage), then ``data: [DONE]``."""
    events = [_chunk(0, {"role": "assistant", "content": ""}, None, None)]
    for i in range(1, chunks - 1):
        events.append(_chunk(i, {"content": WORDS[i % len(WORDS)]}, None, None))
    usage = {
        "prompt_tokens": 1220,
        "completion_tokens": max(chunks - 2, 0),
        "total_tokens": 1220 + max(chunks - 2, 0),
        "prompt_tokens_details": {"cached_tokens": 1152},
        "prompt_cache_hit_tokens": 1152,
        "prompt_cache_miss_tokens": 68,
    }
    events.append(_chunk(chunks - 1, {"content": ""}, "stop", usage))
    events.append(b"data: [DONE]\n\n")
    return tuple(events)


@cache
def sse_body(chunks: int) -> bytes:
    return b"".join(sse_events(chunks))


# Headers of the scrape bench's echo requests (``bench/upstream.py`` answers them in kind).
ECHO_STATUS_HEADER = "x-bench-status"  # the status to answer with
ECHO_FAULT_HEADER = "x-bench-fault"  # abort | garbage | stall | slow (a few paced events)
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
            422: "Unprocessable Entity", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


def echo_request(model: str | None, stream: bool, pad: int = 0) -> bytes:
    """A request body naming ``model`` (none when None); ``pad`` bytes of filler in a message."""
    body: dict[str, object] = {"messages": [{"role": "user", "content": "x" * pad or "Hi"}]}
    if model is not None:
        body["model"] = model
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def echo_reply(status: int, model: str, stream: bool) -> tuple[bytes, list[bytes]]:
    """(head, body pieces) of a reply that reports ``model``, with usage and rate-limit headers.

    Streams start with a keep-alive comment (a queueing signal) and send each event as its own
    HTTP chunk; error statuses get a DeepSeek-shaped JSON error body.
    """
    extra = b"x-ratelimit-limit-requests: 5000\r\nx-ratelimit-remaining-requests: 4999\r\n"
    if status == 429:
        extra += b"Retry-After: 2\r\n"
    line = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "Status").encode())
    if stream and status == 200:
        events = [b": keep-alive\n\n"]
        events += [e.replace(b'"deepseek-chat"', orjson.dumps(model)) for e in sse_events(6)]
        head = line + b"Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        chunks = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
        return head + extra + b"\r\n", [*chunks, b"0\r\n\r\n"]
    if status == 200:
        body = json_body().replace(b'"deepseek-chat"', orjson.dumps(model))
    else:
        body = orjson.dumps({"error": {"message": "bench", "type": "bench", "code": status}})
    head = line + b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + extra + b"\r\n", [body]
