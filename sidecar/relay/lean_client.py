"""The lean upstream leg's client: a keep-alive pool of ``http1.Connection`` per upstream.

Opens connections (name resolution, TCP and TLS within the connect timeout, failures raised as
aiohttp's connector errors), hands out pooled ones under the rules of ``relay.pool``, and writes
each request as aiohttp writes it. What the leg keeps from aiohttp's client, and why it exists:
``relay.http1``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict
from yarl import URL

from sidecar.relay.http1 import Connection, LeanResponse, PoolKey
from sidecar.relay.pool import CURRENT_LEG, POOL_IDLE_S, peer_closed

__all__ = ["LeanClient"]

# aiohttp sends ``Content-Length: 0`` for a body-less request of any other method.
_NO_LENGTH_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class LeanClient:
    """Direct HTTP/1.1 requests to any number of upstreams, over pooled connections."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        connect_timeout_s: float | None,
        read_timeout_s: float | None,
        idle_s: float = POOL_IDLE_S,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._ssl = ssl_context
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._idle_s = idle_s
        self._pools: dict[PoolKey, list[Connection]] = {}
        self._hosts: dict[tuple[str, str | None, int | None], tuple[PoolKey, bytes]] = {}

    async def request(
        self, method: str, url: URL, headers: CIMultiDict[str], body: bytes
    ) -> LeanResponse:
        """Send one request; the response once its head has arrived (aiohttp's exceptions)."""
        key, host = self._target(url)
        conn = self._pooled(key)
        if conn is None:
            conn = await self._connect(key)
        elif (leg := CURRENT_LEG.get()) is not None:
            leg.reused = True
        data = _request_bytes(method, url.raw_path_qs or "/", host, headers, body)
        return await conn.send(data, method == "HEAD", self._read_timeout_s)

    def pool(self, conn: Connection) -> None:
        self._pools.setdefault(conn.key, []).append(conn)
        conn.parked(self._idle_s)

    def forget(self, conn: Connection) -> None:
        idle = self._pools.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)

    async def close(self) -> None:
        """Close every idle connection (those in use close with their responses)."""
        for idle in self._pools.values():
            for conn in idle:
                conn.taken()
                conn.close()
        self._pools.clear()

    def _target(self, url: URL) -> tuple[PoolKey, bytes]:
        """The pool key and the ``Host`` value, computed once per upstream."""
        cache_key = (url.scheme, url.raw_host, url.explicit_port)
        found = self._hosts.get(cache_key)
        if found is None:
            scheme, host = url.scheme, url.raw_host or ""
            port = url.port or _DEFAULT_PORTS.get(scheme, 80)
            found = ((scheme, host, port), (url.host_port_subcomponent or host).encode("ascii"))
            if len(self._hosts) < 64:  # a handful of upstreams; never unbounded
                self._hosts[cache_key] = found
        return found

    def _pooled(self, key: PoolKey) -> Connection | None:
        """The most recently used idle connection that can still carry a request."""
        idle = self._pools.get(key)
        while idle:
            conn = idle.pop()
            conn.taken()
            if not conn.closed and not peer_closed(conn):
                return conn
            conn.close()  # closed by the upstream while idle: never written to
        return None

    async def _connect(self, key: PoolKey) -> Connection:
        scheme, host, port = key
        tls = scheme == "https"
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self, key),
                    host,
                    port,
                    ssl=self._ssl if tls else None,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise aiohttp.ConnectionTimeoutError(
                f"Connection timeout to host {scheme}://{host}:{port}"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise aiohttp.ClientConnectorCertificateError(_key(key, self._ssl), exc) from None
        except ssl.SSLError as exc:
            raise aiohttp.ClientConnectorSSLError(_key(key, self._ssl), exc) from None
        except OSError as exc:
            raise aiohttp.ClientConnectorError(_key(key, self._ssl), exc) from None
        return conn


def _key(key: PoolKey, context: ssl.SSLContext) -> Any:
    """aiohttp's connection key, which its connector errors print."""
    scheme, host, port = key
    tls = scheme == "https"
    return ConnectionKey(host, port, tls, context if tls else True, None, None, None, None)


def _request_bytes(
    method: str, target: str, host: bytes, headers: CIMultiDict[str], body: bytes
) -> bytes:
    """The request as aiohttp writes it; a header value with CR or LF is refused, as there."""
    lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}\r\n")
    elif method not in _NO_LENGTH_METHODS:
        lines.append("Content-Length: 0\r\n")
    block = "".join(lines)
    if block.count("\n") != len(lines) or block.count("\r") != len(lines):
        raise ValueError("Newline or carriage return character detected in HTTP header")
    if "Host" in headers:
        start = f"{method} {target} HTTP/1.1\r\n".encode()
    else:
        start = f"{method} {target} HTTP/1.1\r\nHost: ".encode() + host + b"\r\n"
    return start + block.encode("utf-8", "surrogateescape") + b"\r\n" + body
