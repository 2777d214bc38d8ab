"""Open files: raise the soft limit at start, and count and report running out of them.

Every relayed exchange holds two sockets (the client's and the upstream's), so the default
soft limit of 1,024 that systemd and containerd give a process breaks streams at about 500 in
flight, silently. Go raises its soft limit to the hard limit at start (since 1.19) and nginx
has ``worker_rlimit_nofile``; the sidecar does the same. When descriptors do run out, a failed
accept or connect is counted (``llm_sidecar_fd_exhausted_total``) and logged at most once a
second, and the client whose upstream connection could not be opened gets the
``upstream_unreachable`` envelope naming the cause.
"""

from __future__ import annotations

import asyncio
import errno
import resource
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any

# A bound on what we ask for: an unlimited hard limit must not become a huge per-process table.
MAX_OPEN_FILES = 1 << 20
FDS_PER_EXCHANGE = 2  # the client's socket and the upstream's
# Listeners, the admin port's scrapes, stdout/stderr, the balance poller, DNS and TLS files.
SPARE_FDS = 64
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE})
EXHAUSTED_MESSAGE = "the sidecar ran out of file descriptors (raise its open-files limit)"


@dataclass(frozen=True, slots=True)
class OpenFilesLimit:
    """The soft and hard ``RLIMIT_NOFILE`` after start; ``raised_from`` the soft one before."""

    soft: int
    hard: int
    raised_from: int

    def enough_for(self, concurrency: int) -> bool:
        """True when ``concurrency`` exchanges in flight fit under the limit."""
        return self.soft >= needed_for(concurrency)

    def warn_if_short(self, logger: Any, concurrency: int) -> None:
        """One warning line when even the hard limit cannot carry ``concurrency`` (0: none set)."""
        if concurrency and not self.enough_for(concurrency):
            logger.warning(
                "open_files_limit_low",
                open_files_limit=self.soft,
                hard_limit=self.hard,
                concurrency=concurrency,
                needed=needed_for(concurrency),
            )


def needed_for(concurrency: int) -> int:
    return concurrency * FDS_PER_EXCHANGE + SPARE_FDS


def raise_open_files_limit(maximum: int = MAX_OPEN_FILES) -> OpenFilesLimit:
    """Raise the soft limit to the hard one (at most ``maximum``); never lower it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = maximum if hard == resource.RLIM_INFINITY else min(hard, maximum)
    target = max(soft, ceiling) if soft != resource.RLIM_INFINITY else soft
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # e.g. a sandbox that forbids it: keep what we have
            target = soft
    return OpenFilesLimit(soft=target, hard=hard, raised_from=soft)


def is_exhaustion(exc: BaseException | None) -> bool:
    """True when ``exc`` (or the OS error it wraps) says the process or system has no fds."""
    seen = 0
    while exc is not None and seen < 4:  # aiohttp wraps the OSError once or twice
        if isinstance(exc, OSError) and exc.errno in EXHAUSTED:
            return True
        exc = getattr(exc, "os_error", None) or exc.__cause__
        seen += 1
    return False


class ExhaustionReport:
    """Counts every failure and logs a summary line at most once per ``interval_s``.

    One line per failure would itself need the descriptors and the time that ran out.
    """

    def __init__(
        self,
        count: Callable[[], None],
        log: Any,
        interval_s: float = 1.0,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.count = count
        self.log = log
        self.interval_s = interval_s
        self.clock = clock
        self.unreported = 0
        self.last_logged_at: float | None = None

    def failed(self, where: str) -> None:
        self.count()
        self.unreported += 1
        now = self.clock()
        if self.last_logged_at is None or now - self.last_logged_at >= self.interval_s:
            self.log.warning("fd_exhausted", where=where, failures=self.unreported)
            self.unreported = 0
            self.last_logged_at = now

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Catch the loop's "accept() out of system resource" reports; pass the rest on.

        asyncio and uvloop both report a failed accept to the loop's exception handler and try
        again a second later; the connection waits in the kernel's backlog meanwhile.
        """
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if is_exhaustion(context.get("exception")):
                self.failed("accept")
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)
