"""Log lines never block the event loop: a blocked stdout drops and counts, streams keep flowing."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson

from sidecar.telemetry.writer import LineWriter
from tests.fake_upstream import FakeUpstream, sse

ROOT = Path(__file__).resolve().parent.parent
CHAT = b'{"model":"deepseek-chat","stream":true,"stream_options":{"include_usage":true}}'


def read_available(fd: int, wait_s: float = 0.2) -> bytes:
    """Everything the pipe holds now (and whatever arrives within ``wait_s`` of the last read)."""
    out = b""
    while select.select([fd], [], [], wait_s)[0]:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        out += chunk
    return out


def read_line(fd: int, timeout_s: float = 15.0) -> bytes:
    """One line, byte by byte, so nothing after it is consumed."""
    line = b""
    while not line.endswith(b"\n"):
        assert select.select([fd], [], [], timeout_s)[0], f"no line within {timeout_s} s: {line!r}"
        byte = os.read(fd, 1)
        assert byte, f"the pipe closed: {line!r}"
        line += byte
    return line


def test_lines_arrive_in_order_and_close_flushes_them() -> None:
    read_end, write_end = os.pipe()
    writer = LineWriter(write_end, capacity=1000)
    lines = [b'{"n":%d}\n' % n for n in range(500)]
    for line in lines:
        writer.write(line)
    writer.flush()
    assert writer.close(timeout_s=5)
    os.close(write_end)
    assert read_available(read_end) == b"".join(lines) and writer.dropped == 0
    os.close(read_end)


def test_a_blocked_pipe_drops_and_counts_instead_of_blocking_the_caller() -> None:
    read_end, write_end = os.pipe()
    drops: list[int] = []
    writer = LineWriter(write_end, capacity=10, on_drop=lambda: drops.append(1))
    line = b"x" * 8191 + b"\n"  # 8 lines fill a 64 KiB pipe
    for _ in range(200):
        writer.write(line)  # would hang the test (and fail its timeout) if it blocked
    assert writer.dropped == len(drops) > 0
    received = b""
    while not writer.close(timeout_s=0.1):  # the reader catches up; the queue drains
        received += read_available(read_end, wait_s=0.05)
    os.close(write_end)
    received += read_available(read_end)
    assert received.count(b"\n") + writer.dropped == 200
    assert received == line * received.count(b"\n")  # whole lines only, none torn
    os.close(read_end)


def test_a_closed_stdout_counts_every_line_as_dropped() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # writes now fail with EPIPE (SIGPIPE is ignored by Python)
    writer = LineWriter(write_end, capacity=100)
    for _ in range(30):
        writer.write(b"{}\n")
    assert writer.close(timeout_s=5)
    assert writer.dropped == 30
    os.close(write_end)


async def test_streams_keep_flowing_while_stdout_is_blocked_and_the_count_is_right(
    fake_upstream: tuple[FakeUpstream, str],
) -> None:
    fake, url = fake_upstream
    read_end, write_end = os.pipe()
    argv = ["run", "--upstream", url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--log-queue-lines", "20", "--shutdown-timeout", "2"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "sidecar", *argv], stdout=write_end, cwd=ROOT)
    os.close(write_end)
    try:
        startup = orjson.loads(read_line(read_end))
        proxy = f"http://127.0.0.1:{startup['proxy_port']}"
        admin = f"http://127.0.0.1:{startup['admin_port']}"
        # Nobody reads stdout from here on: ~90 lines fill the pipe, 20 fill the queue.
        total = 400
        async with aiohttp.ClientSession() as client:

            async def one() -> bytes:
                async with client.post(proxy + "/chat/completions", data=CHAT) as response:
                    assert response.status == 200
                    return await response.read()

            for _ in range(total // 40):
                fake.push(*(sse("deepseek-chat-stream.sse") for _ in range(40)))
                bodies = await asyncio.gather(*(one() for _ in range(40)))
                expected = b"".join(sse("deepseek-chat-stream.sse").steps)  # type: ignore[arg-type]
                assert all(body == expected for body in bodies)
            async with client.get(admin + "/metrics") as response:
                metrics = await response.text()
        dropped = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("llm_sidecar_log_lines_dropped_total ")
        )
        assert dropped > 0
        received = read_available(read_end, wait_s=1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        received += read_available(read_end, wait_s=0.5)
        events = [orjson.loads(raw)["event"] for raw in received.splitlines()]
        assert events.count("exchange") + dropped == total
        assert events[-2:] == ["draining", "stopped"]  # the queue is flushed on shutdown
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)
