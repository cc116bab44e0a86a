"""The hedge budget: hedged (extra) calls may be at most ``max_share`` of all calls made over
the last ``window_s`` seconds.

Every model call is noted (``note_call``); a hedge is sent only if ``try_acquire`` admits it,
i.e. if after it the hedges in the window would still be at most ``max_share`` of the calls in
it (counting the hedge itself as a call). With no traffic there is no budget: hedges are paid
for by the calls around them, so a burst of slow calls cannot double the load on a fleet.

``HedgeBudget`` keeps the window in memory (one process, or the simulator in simulated time);
``RedisHedgeBudget`` shares it between all workers. Both count in one-second buckets and take
time as an argument.
"""

from __future__ import annotations

import math
import threading
from collections import deque

import redis

from orchestrator.constants import HEDGE_CALLS_KEY, HEDGE_HEDGES_KEY

DEFAULT_MAX_SHARE = 0.1
"""At most 10% extra calls: Dean & Barroso's 'tail at scale' hedging costs ~2-5% extra load; a
10% cap leaves room for a brownout without ever adding more than a tenth to the fleet's load."""
DEFAULT_WINDOW_S = 60.0
"""The cap holds over each minute: long enough to smooth bursts, short enough that a quiet hour
does not bank hedges for a later incident."""
BUCKET_S = 1.0
"""Calls and hedges are counted per second of the window."""


def _admits(calls: float, hedges: float, max_share: float) -> bool:
    return hedges + 1 <= max_share * (calls + 1) + 1e-9


class HedgeBudget:
    """The budget for one process (thread-safe), in whatever clock the caller passes."""

    def __init__(self, max_share: float = DEFAULT_MAX_SHARE, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.max_share = max_share
        self.window_s = window_s
        self._buckets: deque[list[float]] = deque()  # [bucket start, calls, hedges], oldest first
        self._calls = 0.0
        self._hedges = 0.0
        self._lock = threading.Lock()

    def _advance(self, now: float) -> list[float]:
        start = math.floor(now / BUCKET_S) * BUCKET_S
        while self._buckets and self._buckets[0][0] <= start - self.window_s:
            _, calls, hedges = self._buckets.popleft()
            self._calls -= calls
            self._hedges -= hedges
        if not self._buckets or self._buckets[-1][0] < start:
            self._buckets.append([start, 0.0, 0.0])
        return self._buckets[-1]

    def note_call(self, now: float) -> None:
        """Count one model call started at ``now`` (epoch s)."""
        with self._lock:
            self._advance(now)[1] += 1
            self._calls += 1

    def try_acquire(self, now: float) -> bool:
        """Admit one hedge at ``now`` if the window's budget allows it (and count it)."""
        with self._lock:
            bucket = self._advance(now)
            if not _admits(self._calls, self._hedges, self.max_share):
                return False
            bucket[2] += 1
            self._hedges += 1
            return True

    def usage(self, now: float) -> tuple[int, int]:
        """(calls, hedges) in the window ending at ``now``."""
        with self._lock:
            self._advance(now)
            return int(self._calls), int(self._hedges)


class RedisHedgeBudget:
    """The budget shared by every worker: two Redis hashes of per-second counts.

    ``try_acquire`` first counts the hedge, then reads the window, and takes the hedge back if
    the window is over budget. Two workers racing can therefore both be refused, but never both
    admitted past the cap. The hashes expire when nobody calls for two windows.
    """

    def __init__(
        self, connection: redis.Redis, max_share: float = DEFAULT_MAX_SHARE, window_s: float = DEFAULT_WINDOW_S
    ) -> None:
        self._redis = connection
        self.max_share = max_share
        self.window_s = window_s

    def _bucket(self, now: float) -> str:
        return str(int(now // BUCKET_S))

    def note_call(self, now: float) -> None:
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(HEDGE_CALLS_KEY, self._bucket(now), 1)
            pipe.expire(HEDGE_CALLS_KEY, int(2 * self.window_s))
            pipe.execute()

    def try_acquire(self, now: float) -> bool:
        bucket = self._bucket(now)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(HEDGE_HEDGES_KEY, bucket, 1)
            pipe.expire(HEDGE_HEDGES_KEY, int(2 * self.window_s))
            pipe.hgetall(HEDGE_CALLS_KEY)
            pipe.hgetall(HEDGE_HEDGES_KEY)
            _, _, calls_raw, hedges_raw = pipe.execute()
        calls, stale_calls = self._sum(calls_raw, now)
        hedges, stale_hedges = self._sum(hedges_raw, now)
        admitted = _admits(calls, hedges - 1, self.max_share)
        with self._redis.pipeline(transaction=False) as pipe:
            if not admitted:
                pipe.hincrby(HEDGE_HEDGES_KEY, bucket, -1)
            if stale_calls:
                pipe.hdel(HEDGE_CALLS_KEY, *stale_calls)
            if stale_hedges:
                pipe.hdel(HEDGE_HEDGES_KEY, *stale_hedges)
            pipe.execute()
        return admitted

    def usage(self, now: float) -> tuple[int, int]:
        calls, _ = self._sum(self._redis.hgetall(HEDGE_CALLS_KEY), now)
        hedges, _ = self._sum(self._redis.hgetall(HEDGE_HEDGES_KEY), now)
        return int(calls), int(hedges)

    def _sum(self, raw: dict, now: float) -> tuple[float, list]:
        oldest = int(now // BUCKET_S) - int(self.window_s // BUCKET_S)
        total, stale = 0.0, []
        for field, value in raw.items():
            if int(field) > oldest:
                total += int(value)
            else:
                stale.append(field)
        return total, stale
