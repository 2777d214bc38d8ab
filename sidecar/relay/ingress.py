"""The proxy port's connection protocol: what happens to a request before the handler has it.

aiohttp parses each request (llhttp, strict: no obs-fold, no bare CR or NUL in values, no
``Content-Length`` beside ``Transfer-Encoding``, no second ``Content-Length``). This subclass
of its ``RequestHandler`` adds what a sidecar in front of a buggy local client needs:

- a request aiohttp cannot parse gets the OpenAI envelope, never aiohttp's text page: 431
  ``request_header_too_large`` for an oversized request line, header field or header count,
  400 ``bad_request`` for the rest. The parser's message is not echoed: it may quote a key.
- framing that breaks inside a body (a malformed chunk size) fails the handler's read of the
  body, which answers 400; the connection then closes, because the bytes that follow cannot
  be trusted to start a request (that is how requests are smuggled).
- the client deadline: from the first byte of a request until its body is complete, at most
  ``client_timeout_s``. A slower client gets 408 ``request_timeout`` and the connection
  closes; the upstream is never contacted, since the whole body is read before forwarding.
  The deadline starts with the first byte after the previous request was complete, so an
  idle keep-alive connection is governed by aiohttp's keep-alive timeout instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from sidecar.relay.errors import MALFORMED_BODY, RequestBodyFailed, SidecarError, error_response

# Limits of the request head. aiohttp's defaults, stated here because they are part of what a
# client is promised: an API request's head is a few hundred bytes; nginx's default buffer for
# one header line is 8 KiB too.
MAX_LINE_SIZE = 8190  # request line
MAX_FIELD_SIZE = 8190  # one header field, name and value
MAX_HEADERS = 128
# Both aiohttp parsers raise a plain BadHttpMessage with this text past ``max_headers``.
_TOO_MANY_HEADERS = "Too many headers"
HTTP_VERSIONS = frozenset({HttpVersion10, HttpVersion11})

Rejected = Callable[[SidecarError], None]


def head_too_large(exc: BaseException) -> bool:
    """True when the parser gave up because the request head exceeds a size limit."""
    if isinstance(exc, LineTooLong):
        return True
    return isinstance(exc, BadHttpMessage) and str(exc.message).startswith(_TOO_MANY_HEADERS)


class _Refused(Exception):
    """Queued in place of a request the sidecar refuses itself; the text is the message."""


class IngressHandler(RequestHandler):
    """aiohttp's protocol for one client connection, with envelopes and the client deadline."""

    def __init__(
        self, manager: web.Server, *, client_timeout_s: float, on_rejected: Rejected, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._client_timeout_s = client_timeout_s
        self._on_rejected = on_rejected
        self._deadline: asyncio.TimerHandle | None = None
        self._receiving: StreamReader | None = None  # the body the parser is filling, if any
        self._refusing = False

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            return  # a refusal is on its way and the connection closes after it
        if self._deadline is None and data and not self._upgraded and not self._close:
            self._deadline = self._loop.call_later(self._client_timeout_s, self._expired)
        body_was_open = self._body_open()
        queued = len(self._messages)
        super().data_received(data)
        parsed = list(islice(self._messages, queued, None))
        for index, (message, payload) in enumerate(parsed, start=queued):
            if isinstance(message, _ErrInfo):
                # The parser failed inside the body the handler is reading (or about to).
                self._fail_body(SidecarError.BAD_REQUEST, MALFORMED_BODY)
                self._receiving = None
            elif message.version not in HTTP_VERSIONS:
                self._refuse_version(index)
                break
            else:
                self._receiving = payload
        body = self._receiving
        if body is not None and body.exception() is not None and not body.is_eof():
            self._stop_after(body)  # the pure-Python parser failed the body itself
        if self._deadline is not None and (parsed or body_was_open) and not self._body_open():
            self._deadline.cancel()  # the request is complete: the client met the deadline
            self._deadline = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._receiving = None
        super().connection_lost(exc)

    def _body_open(self) -> bool:
        body = self._receiving
        return body is not None and not body.is_eof() and body.exception() is None

    def _fail_body(self, kind: SidecarError, message: str) -> None:
        """Make the handler's next read of the body raise, so the handler answers ``kind``.

        An exception the parser already set (the pure-Python one does) is kept.
        """
        body = self._receiving
        if body is None or body.is_eof():
            return
        if body.exception() is None:
            body.set_exception(RequestBodyFailed(kind, message))
        self._stop_after(body)

    def _stop_after(self, body: StreamReader) -> None:
        """Close the connection after the current response, without reading the body on."""
        body.feed_eof()  # aiohttp would otherwise keep reading it ("lingering") and fail loudly
        self.close()

    def _refuse_version(self, index: int) -> None:
        """Answer 400 in place of the message at ``index``; drop what was parsed after it.

        aiohttp would answer with the request's version in the status line ("HTTP/2.0 200"),
        over HTTP/1.1 framing: no client reads that correctly.
        """
        while len(self._messages) > index:
            self._messages.pop()
        message = "unsupported HTTP version: the sidecar speaks HTTP/1.0 and HTTP/1.1"
        self._messages.append(
            (_ErrInfo(status=400, exc=_Refused(message), message=message), EMPTY_PAYLOAD)
        )
        self._receiving = None
        self._refusing = True

    def _expired(self) -> None:
        self._deadline = None
        if self.transport is None or self._force_close:
            return
        self._refusing = True
        message = f"request not received within client_timeout_s ({self._client_timeout_s:g} s)"
        if self._body_open():
            self._fail_body(SidecarError.REQUEST_TIMEOUT, message)
            return
        # The head is still incomplete: answer in its place, in order after any earlier request.
        self._messages.append(
            (_ErrInfo(status=408, exc=_Refused(message), message=message), EMPTY_PAYLOAD)
        )
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _make_error_handler(
        self, err_info: Any
    ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        """The envelope for a request aiohttp could not parse (or that timed out in its head)."""
        exc = err_info.exc
        if isinstance(exc, _Refused):
            kind = (
                SidecarError.REQUEST_TIMEOUT if err_info.status == 408 else SidecarError.BAD_REQUEST
            )
            message = str(exc)
        elif head_too_large(exc):
            kind = SidecarError.REQUEST_HEADER_TOO_LARGE
            message = (
                f"request head too large: at most {MAX_LINE_SIZE} bytes per line "
                f"and {MAX_HEADERS} header fields"
            )
        else:
            kind, message = SidecarError.BAD_REQUEST, "malformed HTTP request"
        self._on_rejected(kind)

        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            response = error_response(kind, message)
            response.force_close()
            return response

        return handler


class IngressServer(web.Server):
    """A bare ``web.Server`` whose connections use ``IngressHandler``."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        client_timeout_s: float,
        on_rejected: Rejected,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._client_timeout_s = client_timeout_s
        self._on_rejected = on_rejected

    def __call__(self) -> RequestHandler:
        return IngressHandler(
            self,
            loop=self._loop,
            client_timeout_s=self._client_timeout_s,
            on_rejected=self._on_rejected,
            **self._kwargs,
        )
