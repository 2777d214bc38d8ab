"""``deepseek-sidecar demo --duration 6`` end to end: real processes, real SDK traffic."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_and_shows_numbers() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "demo", "--duration", "6", "--seed", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    frames = [f for f in out.split("deepseek-sidecar demo  ") if "req/min" in f]
    assert len(frames) >= 3, out
    assert "deepseek-flash" in frames[-1]
    seen = re.search(r"sidecar saw: (\d+) requests, (\d+) rate-limited", out)
    assert seen is not None and int(seen.group(1)) > 0, out
    assert re.search(r"concurrency \[.*\] \d+/\d+", out), out
    assert "metrics were served at http://127.0.0.1:" in out
    assert "Traceback" not in proc.stderr


def test_demo_with_a_fallback_shows_the_breaker_opening_and_traffic_moving() -> None:
    """The outage scenario starts 6 s in: the breaker opens and the fallback takes over."""
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "demo", "--fallback", "--duration", "10", "--seed", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "deepseek [OPEN]" in out, out  # the live view shows the open breaker
    moved = re.search(r"^fallbacks: (\d+) \(.*breaker_open (\d+).*\)$", out, re.MULTILINE)
    assert moved is not None and int(moved.group(2)) > 0, out
    assert "Traceback" not in proc.stderr
