"""Errors the sidecar itself returns, in the OpenAI envelope so every SDK surfaces them.

Each carries ``x-sidecar-error: <type>`` so a relayed upstream error (which has no such
header) is never confused with one of ours.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler


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


class EnvelopeRequestHandler(RequestHandler):
    """Requests aiohttp cannot even parse get our envelope instead of its text/plain page.

    The parser's message is not echoed: it may quote the client's bytes (a path with a key).
    """

    def _make_error_handler(
        self, err_info: Any
    ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        status = int(getattr(err_info, "status", 400))

        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            response = error_response(
                SidecarError.BAD_REQUEST, f"malformed HTTP request ({status})", status=status
            )
            response.force_close()
            return response

        return handler


class EnvelopeServer(web.Server):
    """A bare ``web.Server`` whose connections use ``EnvelopeRequestHandler``."""

    def __call__(self) -> RequestHandler:
        return EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)
