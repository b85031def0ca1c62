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

With ``REDIS_URL`` set, the same windows live in Redis instead (:data:`_SLIDING_WINDOW`: one
Lua script, atomic on the server, over a sorted set per key): it prunes the entries older than
the window, counts the rest, adds this request under a unique member when the count is under
the limit, and returns the count and the oldest entry's time, all by Redis's own clock
(``TIME``), so replicas whose clocks disagree still share one window and together admit exactly
the limit. When Redis fails (or is skipped after a failure, ``redis_cache.RedisClient``) the
request is decided by Postgres as above; the two windows do not see each other's entries, so
across the switch a user may get up to one more window's worth of requests.

:class:`LocalRateLimiter` limits the unauthenticated routes that do work (``/readyz``) per client
IP, in the replica's memory: they must answer while Postgres is down, and a probe is per replica.
"""

from __future__ import annotations

import math
import time
import uuid

import asyncpg
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from redis.commands.core import AsyncScript

from .errors import RateLimited
from .metrics import RATE_LIMITED
from .redis_cache import SKIPPED, RedisClient

WINDOW_SECONDS = 60
# First key of pg_advisory_xact_lock(int4, int4); "rl" in ASCII, distinct from the migration lock.
_LOCK_CLASS = 0x726C


class RateLimiter:
    """A sliding window per key in Postgres, or in Redis when ``redis`` is given (Postgres
    still decides whenever Redis does not answer)."""

    def __init__(
        self, pool: asyncpg.Pool, per_minute: int, redis: RedisClient | None = None
    ) -> None:
        self._pool = pool
        self._limit = per_minute
        self._redis = None if redis is None else (redis, redis.register_script(_SLIDING_WINDOW))

    @property
    def enabled(self) -> bool:
        return self._limit > 0

    def _refuse_if_full(self, n: int, wait: float | None, route: str) -> None:
        if n >= self._limit:
            RATE_LIMITED.labels(route).inc()
            raise RateLimited(max(1, math.ceil(float(wait or 1))))

    async def _redis_window(
        self, redis: RedisClient, script: AsyncScript, key: str, route: str, *, record: bool
    ) -> bool:
        """Decide in Redis (True; raises :class:`RateLimited` when full), or False when Redis
        gave no usable answer and Postgres must decide."""
        args = (WINDOW_SECONDS * 1_000_000, self._limit, int(record), uuid.uuid4().hex)
        answer = await redis.run(
            "rate_limiter",
            "rate_limit",
            lambda client: script(keys=[redis.key("rl", key)], args=args, client=client),
        )
        if answer is SKIPPED:
            return False
        if not (
            isinstance(answer, list)
            and len(answer) == 3
            and all(isinstance(value, int) for value in answer)
        ):
            redis.invalid("rate_limiter", "the rate-limit script's answer is malformed")
            return False
        n, oldest, now = answer
        self._refuse_if_full(n, (oldest - now) / 1_000_000 + WINDOW_SECONDS, route)
        return True

    async def admit(self, user_id: str, route: str, request_id: str | None = None) -> None:
        """Record the request, or raise :class:`RateLimited` if the window is full."""
        if not self.enabled:
            return
        if self._redis is not None and await self._redis_window(
            *self._redis, user_id, route, record=True
        ):
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
        self._refuse_if_full(row["n"], row["wait"], route)

    async def check(self, key: str, route: str) -> None:
        """Raise :class:`RateLimited` if ``key``'s window is full, without recording anything."""
        if not self.enabled:
            return
        if self._redis is not None and await self._redis_window(
            *self._redis, key, route, record=False
        ):
            return
        row = await self._pool.fetchrow(_COUNT, key, WINDOW_SECONDS)
        assert row is not None  # nosec B101  (an aggregate always yields one row)
        self._refuse_if_full(row["n"], row["wait"], route)


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

# KEYS[1]: the key's sorted set (member: a request's unique id, score: its time in microseconds
# by Redis's clock). ARGV: window (µs), limit, 1 to record / 0 to only count, the member.
# Prunes what left the window, counts the rest and, when recording and under the limit, adds
# this request; returns {count before adding, oldest entry's time, now}. Times are integers
# below 2^53, exact as Lua numbers and as the sorted set's double scores; the prune bound is
# inclusive ("now - window - 1"), so an entry exactly one window old still counts, as in SQL.
_SLIDING_WINDOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window - 1)
local count = redis.call('ZCARD', KEYS[1])
local oldest = now
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
    oldest = tonumber(first[2])
end
if ARGV[3] == '1' and count < tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[1], now, ARGV[4])
    redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
end
return {count, oldest, now}
"""
