"""Applies a finished call's shared-stats updates (in-flight removal, learning) off the job's
critical path.

After a model call, the job itself only needs its answer; the router's shared stats (a few
Redis round trips under an optimistic transaction) can follow a moment later. One writer thread
per worker process does them in order, which also spares the job threads from racing each
other on the same stats key. If the writer falls behind (Redis very slow), work runs inline:
back-pressure instead of an unbounded queue. A forked job process has no writer and runs
everything inline, so nothing is lost when it exits.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_PENDING = 1000
"""Updates waiting at most (about a second of traffic for a busy worker); beyond, run inline."""


class StatsWriter:
    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._queue: queue.Queue[tuple[Callable, tuple]] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name="stats-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` soon on the writer thread (now, inline, if it is behind)."""
        try:
            self._queue.put_nowait((fn, args))
        except queue.Full:
            fn(*args)

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every submitted update ran (shutdown, tests); False on timeout."""
        done = threading.Event()
        self.submit(done.set)
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            fn, args = self._queue.get()
            try:
                fn(*args)
            except Exception:  # a stats update must never kill the writer
                log.exception("shared-stats update failed")
