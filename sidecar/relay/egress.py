"""How the sidecar reaches its upstreams: trust store, egress proxy, connection pool.

Two legs carry upstream requests (``relay.client``): the lean HTTP/1.1 client for direct
requests, and one ``aiohttp.ClientSession`` for requests through an egress proxy, realtime
handshakes and the balance poller. Both are built here from the settings and an injected
environ mapping, so what a test passes is exactly what the sidecar uses.

The session's default proxy is the one chosen for the primary upstream, which covers the
balance poller; the relay passes the choice for each request's own URL (``proxy_for``).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from yarl import URL

from sidecar.relay.lean_client import LeanClient
from sidecar.relay.pool import POOL_IDLE_S, PoolConnector
from sidecar.relay.proxy_env import ProxyChoice
from sidecar.relay.tls import client_context
from sidecar.settings import Settings


@dataclass(frozen=True, slots=True)
class Egress:
    """The egress choices for one sidecar; built without I/O, so errors surface at start."""

    proxies: ProxyChoice
    primary: URL
    ca_file: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str]) -> Egress:
        """Raises ``SettingsError`` (one line, no secret) for an unusable proxy variable."""
        proxies = ProxyChoice.from_settings(settings.upstream_proxy, environ)
        return cls(proxies, URL(settings.upstream), settings.upstream_ca_file)

    def proxy_for(self, url: URL) -> URL | None:
        return self.proxies.for_url(url)

    def tls_context(self) -> ssl.SSLContext:
        """The verifying context both legs share; ``SettingsError`` for an unusable CA bundle."""
        return client_context(self.ca_file)

    def open_lean(self, settings: Settings, context: ssl.SSLContext) -> LeanClient:
        """The lean leg for direct requests; built in the running event loop."""
        return LeanClient(context, settings.connect_timeout_s, settings.idle_timeout_s)

    def open_session(
        self, settings: Settings, context: ssl.SSLContext | None = None
    ) -> aiohttp.ClientSession:
        """The aiohttp session: proxied requests, WebSocket handshakes, the balance poller."""
        connector = PoolConnector(
            limit=0,  # no pool cap: the guard is the cap
            ssl=context or self.tls_context(),
            keepalive_timeout=POOL_IDLE_S,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=settings.connect_timeout_s, sock_read=settings.idle_timeout_s
            ),
            auto_decompress=False,  # relay compressed bytes untouched
            cookie_jar=aiohttp.DummyCookieJar(),  # never share one client's cookies with another
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            trust_env=False,  # the environment is read once, from the injected mapping
            proxy=self.proxy_for(self.primary),
        )
        # aiohttp resends idempotent requests once on any broken connection, fresh or pooled,
        # and uncounted; the relay applies its own rule (relay.pool) and counts every attempt.
        if hasattr(session, "_retry_connection"):
            session._retry_connection = False
        return session
