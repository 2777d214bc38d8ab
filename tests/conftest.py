"""Shared fixtures: a scriptable fake upstream and a real sidecar on real sockets."""

from __future__ import annotations

import io
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import settings
from prometheus_client import CollectorRegistry

from sidecar.app import Sidecar, bound_port, running
from sidecar.settings import Address, Settings
from sidecar.telemetry.logs import build_logger
from tests.fake_realtime import FakeRealtime
from tests.fake_upstream import FakeUpstream

# The Debian package that brings each binary the tests start (.ci/run installs them).
_PACKAGES = {"promtool": "prometheus", "redis-server": "redis-server", "tinyproxy": "tinyproxy"}


def require_binary(name: str) -> str:
    """Path of a system binary; skip locally when missing, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        hint = f"apt-get install {_PACKAGES.get(name, name)}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI ({hint})")
        pytest.skip(f"{name} is not installed ({hint})")
    return path


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): an unreachable upstream."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningSidecar:
    sidecar: Sidecar
    url: str
    admin_url: str
    log: io.BytesIO

    @property
    def registry(self) -> CollectorRegistry:
        return self.sidecar.registry

    def value(self, name: str, **labels: str) -> float:
        """A sample's value (0.0 when the series does not exist)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def attempts(self, code: str, route: str = "chat_completions") -> float:
        """``llm_upstream_attempts_total`` for the default upstream."""
        return self.value(
            "llm_upstream_attempts_total", upstream="deepseek", route=route, code=code
        )

    def requests(self, **labels: str) -> float:
        """``llm_requests_total`` for the default upstream; ``labels`` name the rest."""
        return self.value("llm_requests_total", upstream="deepseek", **labels)

    async def scrape(self, accept: str | None = None) -> str:
        headers = {"Accept": accept} if accept else {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.admin_url + "/metrics", headers=headers) as response,
        ):
            assert response.status == 200
            return await response.text()

    def log_lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.log.getvalue().splitlines() if line]

    def exchanges(self) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") == "exchange"]


@pytest.fixture
async def fake_upstream() -> AsyncIterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    server = TestServer(fake.app(), host="127.0.0.1", handler_cancellation=True)
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def realtime_upstream() -> AsyncIterator[tuple[FakeRealtime, str]]:
    """A realtime (WebSocket) upstream; see ``tests/fake_realtime.py``."""
    fake = FakeRealtime()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


SidecarFactory = Callable[..., Any]

# Hypothesis: the default profile keeps `make test` fast; HYPOTHESIS_PROFILE=long is the nightly
# run (tests/test_fuzz.py takes its example count from it).
settings.register_profile("long", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@asynccontextmanager
async def running_sidecar(
    upstream: str, environ: Mapping[str, str] | None = None, **overrides: Any
) -> AsyncIterator[RunningSidecar]:
    """A sidecar on ports the OS chooses, with settings overrides; its environ is exactly
    ``environ`` (empty unless given), so no proxy or ``OTEL_*`` variable of the test process
    leaks in."""
    settings = replace(
        Settings(),
        upstream=upstream,
        listen=Address("127.0.0.1", 0),
        admin_listen=Address("127.0.0.1", 0),
        shutdown_timeout_s=2.0,
        **overrides,
    )
    log = io.BytesIO()
    sidecar = Sidecar(
        settings, logger=build_logger("debug", "json", log), environ=dict(environ or {})
    )
    async with running(sidecar) as (proxy_runner, admin_runner):
        yield RunningSidecar(
            sidecar,
            f"http://127.0.0.1:{bound_port(proxy_runner)}",
            f"http://127.0.0.1:{bound_port(admin_runner)}",
            log,
        )


@pytest.fixture
async def start_sidecar() -> AsyncIterator[SidecarFactory]:
    """Start a sidecar (see ``running_sidecar``); all are stopped after the test."""
    async with AsyncExitStack() as stack:

        async def start(upstream: str, **overrides: Any) -> RunningSidecar:
            return await stack.enter_async_context(running_sidecar(upstream, **overrides))

        yield start


@pytest.fixture
async def sidecar(
    fake_upstream: tuple[FakeUpstream, str], start_sidecar: SidecarFactory
) -> RunningSidecar:
    _, url = fake_upstream
    result: RunningSidecar = await start_sidecar(url)
    return result


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session
