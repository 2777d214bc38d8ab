"""CPU time and memory of processes, read from /proc (Linux only, no third-party deps)."""

from __future__ import annotations

import os
from pathlib import Path

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU time of every thread of ``pid``, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) * TICK_S, int(fields[12]) * TICK_S  # utime, stime (14 and 15)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of ``pid``, in seconds."""
    return sum(cpu_split(pid))


def children(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        pids.extend(int(p) for p in text)
    return pids


def family(pid: int) -> list[int]:
    """``pid`` and its direct children (nginx: master and workers)."""
    return [pid, *children(pid)]


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status, e.g. ``VmRSS`` or ``VmHWM``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def total_cpu(pids: list[int]) -> tuple[float, float]:
    """Summed (user, system) CPU seconds of ``pids``."""
    splits = [cpu_split(p) for p in pids]
    return sum(u for u, _ in splits), sum(s for _, s in splits)


def total_kib(pids: list[int], key: str) -> int:
    return sum(status_kib(p, key) for p in pids)


def cpu_busy(cpu: int) -> float:
    """Seconds CPU ``cpu`` spent busy (anything but idle and iowait) since boot, /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{cpu}":
            ticks = [int(f) for f in fields[1:9]]  # user nice system idle iowait irq softirq steal
            return (sum(ticks) - ticks[3] - ticks[4]) * TICK_S
    raise ValueError(f"no cpu{cpu} in /proc/stat")
