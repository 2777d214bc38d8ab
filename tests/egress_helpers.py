"""Real egress for tests: TLS upstreams with trustme certificates, a tinyproxy, and sidecars
started with an explicit environ (so a proxy variable never comes from the test process)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web

from sidecar.app import bound_port
from tests.conftest import closed_port, require_binary, running_sidecar
from tests.fake_upstream import FakeUpstream


def leaf(ca: trustme.CA, *names: str, expired: bool = False) -> trustme.LeafCert:
    """A server certificate for ``names``; ``expired`` makes it end yesterday."""
    if not expired:
        return ca.issue_cert(*names)
    now = dt.datetime.now(dt.UTC)
    return ca.issue_cert(
        *names, not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1)
    )


@dataclass
class TlsUpstream:
    """A ``FakeUpstream`` over TLS that records each handshake's SNI name."""

    fake: FakeUpstream
    url: str
    server_names: list[str | None] = field(default_factory=list)

    @property
    def handshakes(self) -> int:
        return len(self.server_names)


@contextlib.asynccontextmanager
async def tls_upstream(
    cert: trustme.LeafCert, host: str = "localhost", **runner_kwargs: Any
) -> AsyncIterator[TlsUpstream]:
    """Serve a fresh ``FakeUpstream`` at ``https://{host}:PORT`` with ``cert``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    fake = FakeUpstream()
    runner = web.AppRunner(fake.app(), handler_cancellation=True, **runner_kwargs)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    upstream = TlsUpstream(fake, f"https://{host}:{bound_port(runner)}")

    def record(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        upstream.server_names.append(name)

    context.sni_callback = record  # called once per handshake, with the SNI name or None
    try:
        yield upstream
    finally:
        await runner.cleanup()


# A sidecar whose environ is exactly the one given (empty unless given).
egress_sidecar = running_sidecar


async def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Until something accepts on ``port``; fails early if ``process`` exits."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if process.poll() is not None or asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"nothing listens on {port} (exit {process.poll()})") from None
            await asyncio.sleep(0.02)  # polling a port: there is no event to wait on
        else:
            writer.close()
            await writer.wait_closed()
            return


@dataclass
class Tinyproxy:
    url: str  # without credentials
    port: int
    log: Path


@contextlib.asynccontextmanager
async def tinyproxy(
    tmp_path: Path,
    *,
    user: str | None = None,
    password: str | None = None,
    connect_ports: tuple[int, ...] = (),
) -> AsyncIterator[Tinyproxy]:
    """A real CONNECT/forward proxy on loopback; ``connect_ports`` restricts CONNECT."""
    binary = require_binary("tinyproxy")
    port = closed_port()
    log = tmp_path / "tinyproxy.log"
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 30",
        "LogLevel Info",
        "MaxClients 64",
        "Allow 127.0.0.1",
        *(f"ConnectPort {p}" for p in connect_ports),
    ]
    if user is not None and password is not None:
        lines.append(f"BasicAuth {user} {password}")
    config = tmp_path / "tinyproxy.conf"
    config.write_text("\n".join(lines) + "\n")
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "-d", "-c", str(config)], stdout=out, stderr=out)
    try:
        await wait_for_port(port, process, 10.0)
        yield Tinyproxy(f"http://127.0.0.1:{port}", port, log)
    finally:
        process.terminate()
        process.wait(5)
