"""Per-user sliding-window rate limit, shared by every replica through Postgres.

Each admitted request is a row in ``requests``. Admission runs in one short
transaction that first takes a transaction-scoped advisory lock on the user
(two-key form: this module's class id + a hash of the user id), so concurrent
requests of one user on different replicas are serialised and cannot both see
"one slot left"; then one statement prunes the user's rows older than the window
(which keeps the per-user index range tiny), counts the rest and records the request
if there is room: four round trips in all (begin, lock, statement, commit). The window
is a true sliding window (count of rows in the last 60 s), and ``Retry-After`` is when
the oldest of them leaves it.

The key is the user id for the per-user limit. The same limiter, with its own limit, counts
failed authentications per client IP under the key ``authfail:<ip>`` (``deps.py``):
:meth:`RateLimiter.check` reads that window without recording (one statement, no lock) before a
token is verified, :meth:`RateLimiter.admit` records a failure.

:class:`LocalRateLimiter` limits the unauthenticated routes that do work (``/readyz``) per client
IP, in the replica's memory: they must answer while Postgres is down, and a probe is per replica.
"""

from __future__ import annotations

import math
import time

import asyncpg
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from .errors import RateLimited
from .metrics import RATE_LIMITED

WINDOW_SECONDS = 60
# First key of pg_advisory_xact_lock(int4, int4); "rl" in ASCII, distinct from the migration lock.
_LOCK_CLASS = 0x726C


class RateLimiter:
    def __init__(self, pool: asyncpg.Pool, per_minute: int) -> None:
        self._pool = pool
        self._limit = per_minute

    @property
    def enabled(self) -> bool:
        return self._limit > 0

    async def admit(self, user_id: str, route: str, request_id: str | None = None) -> None:
        """Record the request, or raise :class:`RateLimited` if the window is full."""
        if not self.enabled:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, user_id
            )
            row = await conn.fetchrow(
                _PRUNE_COUNT_RECORD, user_id, WINDOW_SECONDS, self._limit, route, request_id
            )
        # An aggregate without GROUP BY always yields one row (B101 does not apply).
        assert row is not None  # nosec B101
        if row["n"] >= self._limit:
            RATE_LIMITED.labels(route).inc()
            raise RateLimited(max(1, math.ceil(float(row["wait"] or 1))))

    async def check(self, key: str, route: str) -> None:
        """Raise :class:`RateLimited` if ``key``'s window is full, without recording anything."""
        if not self.enabled:
            return
        row = await self._pool.fetchrow(_COUNT, key, WINDOW_SECONDS)
        assert row is not None  # nosec B101  (an aggregate always yields one row)
        if row["n"] >= self._limit:
            RATE_LIMITED.labels(route).inc()
            raise RateLimited(max(1, math.ceil(float(row["wait"] or 1))))


class LocalRateLimiter:
    """A sliding minute per key in this process (the ``limits`` library's moving window)."""

    def __init__(self, per_minute: int) -> None:
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self._windows = MovingWindowRateLimiter(MemoryStorage())

    def admit(self, key: str, route: str) -> None:
        """Count the request, or raise :class:`RateLimited` if ``key``'s window is full."""
        if self._item is None or self._windows.hit(self._item, key):
            return
        reset = self._windows.get_window_stats(self._item, key).reset_time
        RATE_LIMITED.labels(route).inc()
        raise RateLimited(max(1, math.ceil(reset - time.time())))


_COUNT = """
SELECT count(*) AS n,
       extract(epoch FROM min("timestamp") + make_interval(secs => $2) - clock_timestamp()) AS wait
FROM requests
WHERE user_id = $1 AND "timestamp" >= clock_timestamp() - make_interval(secs => $2)
"""

# After the lock (its own statement, so this one's snapshot sees every admitted request):
# prune the user's rows older than the window, count the rest, and record this request
# only if the count is under the limit. The count reads the statement's snapshot, so
# neither the pruning nor the new row changes it.
_PRUNE_COUNT_RECORD = """
WITH pruned AS (
    DELETE FROM requests
    WHERE user_id = $1 AND "timestamp" < clock_timestamp() - make_interval(secs => $2)
), recent AS (
    SELECT count(*) AS n,
           extract(epoch FROM min("timestamp") + make_interval(secs => $2) - clock_timestamp())
               AS wait
    FROM requests
    WHERE user_id = $1 AND "timestamp" >= clock_timestamp() - make_interval(secs => $2)
), admitted AS (
    INSERT INTO requests (user_id, route, request_id, "timestamp")
    SELECT $1, $4, $5, clock_timestamp() FROM recent WHERE n < $3
)
SELECT n, wait FROM recent
"""
