"""Log lines leave through a bounded queue and a writer thread, never from the event loop.

In Kubernetes stdout is a pipe to the container runtime; when the runtime reads slowly the pipe
fills and a plain ``write`` blocks, and with it every stream in the pod. Here the loop only
appends a line to a bounded queue (a deque append, atomic under the GIL); a daemon thread does
the blocking writes. The thread is woken only when it sleeps with nothing queued, and then
lets lines gather for ``LINGER_S`` before one write: under load the loop pays no wake-up and
no lock per line, and the thread runs about a hundred times a second instead of once a line
(on a pinned core each wake-up was a context switch and a GIL hand-over inside the request
path). When the queue is full, because
stdout stayed blocked longer than the queue holds, the line is dropped and counted
(``llm_sidecar_log_lines_dropped_total``) rather than stalling traffic. ``close`` flushes what
is queued, within a bound, so the last lines of a clean shutdown still appear.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable

DEFAULT_QUEUE_LINES = 4096  # ~2.5 MB of ~600-byte exchange lines: minutes of a slow reader
_BATCH_LINES = 256  # one write() call carries up to this many queued lines
LINGER_S = 0.01  # a line waits at most this long (plus the write) before it is written


class LineWriter:
    """A file-like sink for structlog's ``BytesLogger``: ``write`` queues, a thread writes."""

    def __init__(
        self,
        fd: int,
        capacity: int = DEFAULT_QUEUE_LINES,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.fd = fd
        self.capacity = capacity
        self.on_drop = on_drop
        self.dropped = 0
        self._lines: deque[bytes] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._broken = False
        self._sleeping = False  # the thread waits for a line: the next ``write`` wakes it
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Queue one rendered line (structlog's BytesLogger adds the newline).

        The checks and the append need no lock (a deque append is atomic under the GIL, and a
        line from another thread at worst lets the queue overshoot by one). The lock is taken
        only to wake a sleeping writer, which holds it while it decides to sleep, so the
        wake-up cannot fall between its last look at the queue and its wait.
        """
        if len(self._lines) >= self.capacity or self._broken or self._closing:
            self._drop()
            return
        self._lines.append(data)
        if self._sleeping:
            with self._ready:
                self._ready.notify()

    def flush(self) -> None:
        """Nothing to do here: the writer thread flushes as it writes."""

    def _drop(self) -> None:
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop()

    def _run(self) -> None:
        lines = self._lines
        while True:
            if not lines:
                with self._ready:
                    self._sleeping = True
                    while not lines and not self._closing:
                        self._ready.wait()
                    self._sleeping = False
                if not lines:  # closing, and everything was written
                    return
                if not self._closing:
                    time.sleep(LINGER_S)  # let the lines of this moment join one write
            batch = [lines.popleft() for _ in range(min(len(lines), _BATCH_LINES))]
            self._write_all(b"".join(batch))

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except InterruptedError:
                continue
            except OSError:  # stdout closed (EPIPE): nothing more will get through
                with self._ready:
                    self._broken = True
                    for _ in range(data.count(b"\n") + len(self._lines)):
                        self._drop()
                    self._lines.clear()
                return
            view = view[written:]

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop accepting lines and write what is queued; False if stdout stayed blocked."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
