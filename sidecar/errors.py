"""Errors the sidecar itself returns, in the OpenAI envelope so every SDK surfaces them.

Each carries ``x-sidecar-error: <type>`` so a relayed upstream error (which has no such
header) is never confused with one of ours.
"""

from __future__ import annotations

from enum import StrEnum

import orjson
from aiohttp import web


class SidecarError(StrEnum):
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    REQUEST_TOO_LARGE = "request_too_large"
    BAD_REQUEST = "bad_request"
    LOCAL_RATE_LIMITED = "local_rate_limited"


STATUS = {
    SidecarError.UPSTREAM_UNREACHABLE: 502,
    SidecarError.UPSTREAM_TIMEOUT: 504,
    SidecarError.REQUEST_TOO_LARGE: 413,
    SidecarError.BAD_REQUEST: 400,
    SidecarError.LOCAL_RATE_LIMITED: 429,
}


def error_response(
    kind: SidecarError, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Build the envelope response; ``message`` must never contain secrets or bodies."""
    body = orjson.dumps(
        {"error": {"message": message, "type": kind.value, "param": None, "code": kind.value}}
    )
    all_headers = {"x-sidecar-error": kind.value, **(headers or {})}
    return web.Response(
        status=STATUS[kind], body=body, content_type="application/json", headers=all_headers
    )
