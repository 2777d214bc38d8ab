"""A real ``redis-server`` for tests: a free loopback port, no persistence, stop and restart.

Started with ``--save "" --appendonly no`` so nothing survives a restart (like a Redis pod
that is replaced) and nothing is written to disk. Readiness is the server's own "Ready to
accept connections" line, not a sleep.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest

from tests.conftest import closed_port, require_binary

READY = b"Ready to accept connections"


class RedisServer:
    """One ``redis-server`` process on ``port``; ``stop`` then ``start`` keeps the port."""

    def __init__(self, binary: str, port: int, password: str | None = None) -> None:
        self.binary = binary
        self.port = port
        self.password = password
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        argv = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--loglevel", "notice"]  # fmt: skip
        if self.password is not None:
            argv += ["--requirepass", self.password]
        proc = await asyncio.create_subprocess_exec(
            self.binary, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        self._proc = proc
        assert proc.stdout is not None
        seen = b""
        async with asyncio.timeout(10):
            while READY not in seen:
                line = await proc.stdout.readline()
                assert line, f"redis-server exited: {seen.decode(errors='replace')}"
                seen += line
        self._drain = asyncio.create_task(self._drained(proc))

    @staticmethod
    async def _drained(proc: asyncio.subprocess.Process) -> None:
        """Keep reading the log so a full pipe never stalls the server."""
        assert proc.stdout is not None
        while await proc.stdout.read(65536):
            pass

    async def stop(self) -> None:
        """Stop the server (SIGTERM; SIGKILL after 5 s); everything it held is gone."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._drain is not None:
            await self._drain

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing is answered."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A fresh ``redis-server`` on a free port (skipped locally without it, fails in CI)."""
    server = RedisServer(require_binary("redis-server"), closed_port())
    await server.start()
    yield server
    await server.stop()
