"""Commands, names and HTTP helpers shared by the container image tests."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_DIR = REPO / ".build" / "image"
IMAGE = "localhost/deepseek-sidecar:dev"
STANDIN_BASE = os.environ.get("STANDIN_BASE", "localhost/deepseek-sidecar-standin:bookworm")
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


@dataclass
class Built:
    image_id: str
    python: str
    build_s: float
    size_bytes: int


def run(
    argv: list[str], env: dict[str, str], timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output, which is what one debugs."""
    proc = subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(argv[:6])}... exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


def podman(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    return run(["podman", "--runtime", "runc", *args], env, timeout).stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, bytes(exc.read())


def http_get_quiet(url: str, headers: dict[str, str] | None = None) -> int:
    """Status of a GET, 0 while nothing listens yet."""
    try:
        return http_get(url, headers)[0]
    except OSError:
        return 0
