"""Which leg carries an upstream request: the lean HTTP/1.1 client or aiohttp's session.

Direct requests (no egress proxy) that are not WebSocket upgrades, which is nearly every
request, take the lean leg (``relay.http1``). A request through an egress proxy (``CONNECT``
tunnels, proxy authentication) and a WebSocket handshake (whose connection becomes a raw
tunnel, ``relay.tunnel``) take aiohttp's session, which does both well and whose cost does not
matter at their rate. Both answer with the same small interface, ``UpstreamResponse``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from sidecar.relay.lean_client import LeanClient

__all__ = ["BodyReader", "UpstreamClient", "UpstreamResponse"]


class BodyReader(Protocol):
    """The two reads the relay makes on a response body."""

    async def readany(self) -> bytes: ...
    async def read(self, n: int) -> bytes: ...


class UpstreamResponse(Protocol):
    """What the relay uses of an upstream response; ``aiohttp.ClientResponse`` is one."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def headers(self) -> CIMultiDictProxy[str]: ...
    @property
    def content(self) -> BodyReader: ...
    def release(self) -> object: ...
    def close(self) -> None: ...


class UpstreamClient:
    """Sends each upstream request on the leg that suits it (see the module docstring)."""

    def __init__(self, lean: LeanClient, session: Callable[[], aiohttp.ClientSession]) -> None:
        self.lean = lean
        self.session = session  # looked up per request: the owner may replace its session

    async def request(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: bytes,
        proxy: URL | None,
    ) -> UpstreamResponse:
        if proxy is None and "Upgrade" not in headers:
            return await self.lean.request(method, url, headers, body)
        return await self.session().request(
            method,
            url,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            proxy=proxy,
        )

    async def close(self) -> None:
        await self.lean.close()
