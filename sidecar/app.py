"""Builds the proxy server and the admin app, and runs both until SIGTERM/SIGINT.

The proxy port is a bare ``web.Server``: no router, so every method and path (CONNECT and
absolute-form targets included) reaches the one handler and no upstream path is shadowed.
The admin app serves ``/metrics``, ``/healthz`` and ``/readyz`` on its own port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar.accounting.balance import BalancePoller
from sidecar.accounting.catalogue import Catalogue
from sidecar.accounting.cost import price_exchange
from sidecar.admission.fallback import BREAKER_OPEN, Router
from sidecar.admission.guard import ConcurrencyGuard
from sidecar.admission.retry import RetryPolicy
from sidecar.exchange import Exchange
from sidecar.relay.client import UpstreamClient
from sidecar.relay.descriptors import (
    ExhaustionReport,
    raise_open_files_limit,
)
from sidecar.relay.egress import Egress
from sidecar.relay.errors import SidecarError
from sidecar.relay.failover import Failover
from sidecar.relay.ingress import MAX_FIELD_SIZE, MAX_HEADERS, MAX_LINE_SIZE, IngressServer
from sidecar.relay.proxy import Proxy
from sidecar.relay.upstream import Attempt
from sidecar.settings import Address, Settings, SettingsError
from sidecar.telemetry.exposition import Exposition
from sidecar.telemetry.labels import ModelLabels
from sidecar.telemetry.logs import build_logger, log_exchange
from sidecar.telemetry.metrics import Metrics
from sidecar.telemetry.writer import LineWriter

if TYPE_CHECKING:
    from sidecar.telemetry.otel import OtelExport

READY = web.AppKey("ready", dict)
# How long a stopping sidecar waits for stdout to take its last queued lines.
LOG_FLUSH_TIMEOUT_S = 5.0


@dataclass
class Sidecar:
    """One running sidecar: settings, metrics, the upstream client, and readiness."""

    settings: Settings
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    logger: Any = None
    ready: dict[str, bool] = field(default_factory=lambda: {"ready": True})
    session: aiohttp.ClientSession | None = None
    client: UpstreamClient | None = None
    catalogue: Catalogue = field(default_factory=Catalogue.builtin)
    poller: BalancePoller | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)  # OTEL_* variables

    def __post_init__(self) -> None:
        s = self.settings
        mapped = (m for fb in s.fallback for m in fb.models.values())  # bounded by the config
        models = ModelLabels((*s.models, *mapped), s.max_models)
        self.metrics = Metrics(self.registry, s.upstream_name, models)
        self.log_writer: LineWriter | None = None
        if self.logger is None:  # stdout, written off the event loop
            self.log_writer = LineWriter(
                sys.stdout.fileno(), s.log_queue_lines, on_drop=self.metrics.log_line_dropped
            )
            self.logger = build_logger(s.log_level, s.log_format, self.log_writer)
        self.metrics.configured(s.limit_rpm, s.limit_tpm, s.limit_concurrency)
        self.metrics.retirements(self.catalogue.retirements())
        self.guard = self._guard()
        self.fd_report = ExhaustionReport(self.metrics.fd_exhausted, self.logger)
        self.otel = self._otel()
        self.egress = Egress.from_settings(s, self.environ)  # proxy variables read once, here
        attempt = Attempt(
            RetryPolicy(s.retry_max_attempts, s.retry_max_wait_s),
            log=self.logger,
            on_fd_exhausted=self.fd_report.failed,
            egress=self.egress,
        )
        self.proxy = Proxy(
            self.settings,
            client_factory=self._client,
            on_started=lambda ex: self.metrics.started(ex.route),
            on_finished=self._finished,
            attempt=attempt,
            guard=self.guard,
            failover=self._failover(attempt),
            on_upstream_headers=self.otel.trace_context if self.otel else None,
        )

    def _failover(self, attempt: Attempt) -> Failover | None:
        """Fallback upstreams, each with a breaker, when the config file lists any."""
        s = self.settings
        if not s.fallback:
            return None
        router = Router(
            s.upstream_name,
            s.fallback,
            s.breaker_failures,
            s.breaker_cooldown_s,
            on_state=self.metrics.circuit_state,
        )
        for fb in s.fallback:  # the pairs that can happen exist at zero from the start
            for reason in (*sorted(fb.on), BREAKER_OPEN):
                self.metrics.fallback(s.upstream_name, fb.name, reason, 0)
        return Failover(router, attempt, self._client, s.upstream, on_moved=self.metrics.moved)

    def _guard(self) -> ConcurrencyGuard | None:
        """The opt-in guard: local, or shared through Redis (imported only when asked for)."""
        s = self.settings
        if not s.max_concurrency:
            return None
        if s.guard_redis_url is None:
            return ConcurrencyGuard(s.max_concurrency, s.guard_max_wait_s)
        from sidecar.admission.shared_guard import SharedGuard

        key = s.guard_key or s.upstream_name
        return SharedGuard(
            s.guard_redis_url,
            key,
            s.max_concurrency,
            s.guard_max_wait_s,
            s.guard_lease_s,
            report=self.metrics,
            log=self.logger,
        )

    def _otel(self) -> OtelExport | None:
        """OpenTelemetry export when ``--otlp-endpoint`` is set; the SDK is an optional extra."""
        if self.settings.otlp_endpoint is None:
            return None
        try:
            from sidecar.telemetry.otel import build
        except ImportError:
            raise SettingsError(
                "--otlp-endpoint: OpenTelemetry export needs the otel extra "
                "(pip install 'deepseek-sidecar[otel]')"
            ) from None
        return build(self.settings, self.environ, self.metrics.otel_dropped)

    def _client(self) -> UpstreamClient:
        if self.client is None:
            raise RuntimeError("upstream client used before start()")
        return self.client

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            raise RuntimeError("upstream session used before start()")
        return self.session

    def _finished(self, ex: Exchange) -> None:
        """Record and log one finished exchange; a failure here must not break the client."""
        try:
            price_exchange(ex, self.catalogue)
            self.metrics.record(ex)
            log_exchange(self.logger, ex, self.metrics.models.label(ex.model))
            if self.otel is not None:
                self.otel.finished(ex)
        except Exception as exc:  # pragma: no cover - defensive: never fail the response
            self.logger.error("record_failed", error=type(exc).__name__)

    async def start(self) -> None:
        s = self.settings
        self.fd_report.install(asyncio.get_running_loop())
        context = self.egress.tls_context()  # one trust store for both legs
        self.session = self.egress.open_session(s, context)  # egress proxy, pool expiry
        self.client = UpstreamClient(self.egress.open_lean(s, context), self._session)
        if s.balance_poll_s > 0 and s.api_key:
            self.poller = BalancePoller(
                self.session,
                s.upstream + "/user/balance",
                s.api_key,
                s.balance_poll_s,
                on_report=self.metrics.balance,
                on_failure=self.metrics.balance_failure,
            )
            self.poller.start()
        if self.guard is not None:
            await self.guard.start()

    async def close(self) -> None:
        if self.otel is not None:  # the proxy has drained: every span has been handed over
            await asyncio.to_thread(self.otel.shutdown)
        if self.poller is not None:
            await self.poller.stop()
        if self.guard is not None:
            await self.guard.close()  # after the drain: every slot has been released
        if self.client is not None:
            await self.client.close()
        if self.session is not None:
            await self.session.close()

    def proxy_server(self) -> web.Server:
        return IngressServer(
            self.proxy.handle,
            client_timeout_s=self.settings.client_timeout_s,
            on_rejected=self._rejected,
            handler_cancellation=True,
            access_log=None,
            auto_decompress=False,  # a client's compressed body is forwarded as sent
            max_line_size=MAX_LINE_SIZE,
            max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
        )

    def _rejected(self, kind: SidecarError) -> None:
        """A request answered before it was one (unparseable, head too large or too slow)."""
        self.logger.info("request_rejected", error_type=kind.value)

    def admin_app(self) -> web.Application:
        app = web.Application()
        app[READY] = self.ready
        app.router.add_get("/metrics", Exposition(self.registry).handle)
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/readyz", _readyz)
        return app


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    if request.app[READY]["ready"]:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "draining"}, status=503)


@asynccontextmanager
async def running(sidecar: Sidecar) -> AsyncIterator[tuple[web.ServerRunner, web.AppRunner]]:
    """Start both listeners; on exit drain the proxy (bounded) and stop everything."""
    s = sidecar.settings
    await sidecar.start()
    proxy_runner = web.ServerRunner(
        sidecar.proxy_server(), shutdown_timeout=s.shutdown_timeout_s, handle_signals=False
    )
    admin_runner = web.AppRunner(sidecar.admin_app(), access_log=None, handle_signals=False)
    await proxy_runner.setup()
    await admin_runner.setup()
    try:
        await _listen(proxy_runner, "--listen", s.listen)
        await _listen(admin_runner, "--admin-listen", s.admin_listen)
        yield proxy_runner, admin_runner
    finally:
        sidecar.ready["ready"] = False
        await proxy_runner.cleanup()  # stops listening at once, then waits for in-flight
        await sidecar.close()
        await admin_runner.cleanup()


async def _listen(runner: web.BaseRunner, flag: str, address: Address) -> None:
    """Bind, turning "address in use" into a settings error (one line, exit 2)."""
    try:
        await web.TCPSite(runner, address.host, address.port).start()
    except OSError as exc:
        raise SettingsError(f"{flag}: cannot listen on {address} ({exc.strerror or exc})") from None


def bound_port(runner: web.BaseRunner) -> int:
    """The port a runner's first site listens on (useful with port 0)."""
    server = runner.sites and next(iter(runner.sites))._server
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else 0


async def serve(settings: Settings, catalogue: Catalogue) -> None:
    """Run until SIGTERM or SIGINT, then drain within ``shutdown_timeout_s`` and return."""
    limit = raise_open_files_limit()
    sidecar = Sidecar(settings, catalogue=catalogue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(sidecar) as (proxy_runner, admin_runner):
        sidecar.logger.info(
            "startup",
            proxy_port=bound_port(proxy_runner),
            admin_port=bound_port(admin_runner),
            open_files_limit=limit.soft,
            settings=settings.masked(),
        )
        limit.warn_if_short(sidecar.logger, settings.max_concurrency or settings.limit_concurrency)
        await stop.wait()
        sidecar.ready["ready"] = False
        sidecar.logger.info("draining", shutdown_timeout_s=settings.shutdown_timeout_s)
    sidecar.logger.info("stopped")
    if sidecar.log_writer is not None:
        sidecar.log_writer.close(LOG_FLUSH_TIMEOUT_S)
