"""Errors the sidecar itself returns, in the OpenAI envelope so every SDK surfaces them.

Each carries ``x-sidecar-error: <type>`` so a relayed upstream error (which has no such
header) is never confused with one of ours.
"""

from __future__ import annotations

from enum import StrEnum

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError


class SidecarError(StrEnum):
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    REQUEST_TOO_LARGE = "request_too_large"
    BAD_REQUEST = "bad_request"
    LOCAL_RATE_LIMITED = "local_rate_limited"
    UPSTREAM_BAD_RESPONSE = "upstream_bad_response"
    UPSTREAM_TLS_ERROR = "upstream_tls_error"
    REQUEST_HEADER_TOO_LARGE = "request_header_too_large"
    REQUEST_TIMEOUT = "request_timeout"


STATUS = {
    SidecarError.UPSTREAM_UNREACHABLE: 502,
    SidecarError.UPSTREAM_TIMEOUT: 504,
    SidecarError.REQUEST_TOO_LARGE: 413,
    SidecarError.BAD_REQUEST: 400,
    SidecarError.LOCAL_RATE_LIMITED: 429,
    SidecarError.UPSTREAM_BAD_RESPONSE: 502,
    SidecarError.UPSTREAM_TLS_ERROR: 502,
    SidecarError.REQUEST_HEADER_TOO_LARGE: 431,
    SidecarError.REQUEST_TIMEOUT: 408,
}

MALFORMED_BODY = "malformed request body (framing or chunk sizes)"


def error_response(
    kind: SidecarError,
    message: str,
    headers: dict[str, str] | None = None,
    status: int | None = None,
) -> web.Response:
    """Build the envelope response; ``message`` must never contain secrets or bodies."""
    body = orjson.dumps(
        {"error": {"message": message, "type": kind.value, "param": None, "code": kind.value}}
    )
    all_headers = {"x-sidecar-error": kind.value, **(headers or {})}
    return web.Response(
        status=status or STATUS[kind],
        body=body,
        content_type="application/json",
        headers=all_headers,
    )


class RequestBodyFailed(RequestPayloadError):
    """A request body the sidecar stopped reading: its framing broke, or the client was slower
    than ``client_timeout_s``. Raised from the body's reads, so the handler answers it."""

    def __init__(self, kind: SidecarError, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def body_failure(exc: RequestPayloadError) -> tuple[SidecarError, str]:
    """The envelope for a request body that could not be read.

    aiohttp's own parser reports broken framing as a plain ``RequestPayloadError`` whose text
    may quote the client's bytes, so only our own failures keep their message.
    """
    if isinstance(exc, RequestBodyFailed):
        return exc.kind, exc.message
    return SidecarError.BAD_REQUEST, MALFORMED_BODY
