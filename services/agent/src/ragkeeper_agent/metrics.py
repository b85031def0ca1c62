"""Prometheus metrics of the agent service, in one registry of their own.

A private ``REGISTRY`` (not the process-global default) keeps tests independent and
lets the chart's tests enumerate exactly what the service exports via
:func:`metric_names`, to cross-check the Grafana dashboard and alert rules.
Names carry the ``ragkeeper_agent_`` prefix and base units; counters end in ``_total``.
The standard ``process_*`` metrics (CPU seconds, resident memory, open file descriptors; on
Linux) are on this registry too, under their usual names.

Database pool metrics: :func:`instrument_pool` is the one place the app's asyncpg pool is
metered. It times every ``pool.acquire()`` (every query of the store, the conversations, the
limiter and the SQL tool goes through it) and counts the acquires that had to wait because
every connection was busy at the pool's maximum; size, in use and maximum are read from the
pool at scrape time.

Redis (``redis_cache.py``, docs/redis.md): cache lookups by cache and result, each Redis call's
duration, the requests that went on without Redis by component and reason, and
``ragkeeper_agent_redis_up``, which has a sample only while a Redis client is open (REDIS_URL).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Protocol

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

HTTP_REQUESTS = Counter(
    "ragkeeper_agent_http_requests_total",
    "HTTP requests served, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "ragkeeper_agent_http_request_duration_seconds",
    "Time to the end of the response body (streams included), by route and status.",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_IN_FLIGHT = Gauge(
    "ragkeeper_agent_http_requests_in_flight",
    "HTTP requests currently being served (open streams included).",
    registry=REGISTRY,
)
AGENT_RUN_DURATION = Histogram(
    "ragkeeper_agent_run_duration_seconds",
    "Duration of one agent turn (all model requests and tool calls), by model and outcome.",
    ["model", "outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "ragkeeper_agent_tool_calls_total",
    "Tool calls made by the agent, by tool and outcome (ok, retry, error).",
    ["tool", "outcome"],
    registry=REGISTRY,
)
MCP_TOOL_CALLS = Counter(
    "ragkeeper_agent_mcp_tool_calls_total",
    "Tool calls on the MCP endpoint (/mcp), by tool and outcome (ok, invalid: a mistake the "
    "client can fix, error).",
    ["tool", "outcome"],
    registry=REGISTRY,
)
ATTACHMENTS = Counter(
    "ragkeeper_agent_attachments_total",
    "Files attached to chat messages, by format (the extension read, or other) and outcome "
    "(read; image: sent to a vision model as it is; too_large: over a size or extraction cap, "
    "413; unsupported, unreadable: 422).",
    ["format", "outcome"],
    registry=REGISTRY,
)
ATTACHMENT_READ_DURATION = Histogram(
    "ragkeeper_agent_attachment_read_seconds",
    "Time to read one attached file (extraction, OCR for images), waiting for a slot included.",
    ["format"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TOKENS = Counter(
    "ragkeeper_agent_tokens_total",
    "Model tokens, by model and direction (input, output).",
    ["model", "direction"],
    registry=REGISTRY,
)
RETRIEVAL_DURATION = Histogram(
    "ragkeeper_agent_retrieval_duration_seconds",
    "Time to embed a query and run the hybrid search.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
RERANK_DURATION = Histogram(
    "ragkeeper_agent_rerank_duration_seconds",
    "Time of one call to the reranking service (retries included), whatever its outcome.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RERANK_FAILURES = Counter(
    "ragkeeper_agent_rerank_failures_total",
    "Searches answered in the fused order because reranking failed, by reason "
    "(unavailable: still failing after retries; error: refused or malformed answer).",
    ["reason"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "ragkeeper_agent_rate_limit_rejections_total",
    "Requests rejected with 429 by the per-user sliding-window limiter, by route.",
    ["route"],
    registry=REGISTRY,
)
CONVERSATIONS_CREATED = Counter(
    "ragkeeper_agent_conversations_created_total",
    "New conversations started.",
    registry=REGISTRY,
)

CACHE_REQUESTS = Counter(
    "ragkeeper_agent_cache_requests_total",
    "Lookups in the Redis caches, by cache (embedding, search) and result (hit, miss); a lookup "
    "skipped or failed while Redis is unavailable is a fallback, not a miss.",
    ["cache", "result"],
    registry=REGISTRY,
)
REDIS_DURATION = Histogram(
    "ragkeeper_agent_redis_duration_seconds",
    "Time of one Redis operation (get, set, rate_limit, ping), whatever its outcome.",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
    registry=REGISTRY,
)
REDIS_FALLBACKS = Counter(
    "ragkeeper_agent_redis_fallbacks_total",
    "Requests that went on without Redis, by component (embedding_cache, search_cache, "
    "rate_limiter) and reason (unavailable: down or skipped while down; timeout; invalid: an "
    "unusable value or error reply).",
    ["component", "reason"],
    registry=REGISTRY,
)

POOL_ACQUIRE_DURATION = Histogram(
    "ragkeeper_agent_db_pool_acquire_duration_seconds",
    "Time to get a connection from the database pool (waiting for a free one included).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
POOL_WAITS = Counter(
    "ragkeeper_agent_db_pool_waits_total",
    "Connection acquires that found every connection busy with the pool at its maximum size.",
    registry=REGISTRY,
)


class _MeteredAcquire:
    """``pool.acquire()``'s context, timed (``async with`` and plain ``await`` alike)."""

    __slots__ = ("_inner", "_pool")

    def __init__(self, pool: asyncpg.Pool, inner: Any) -> None:
        self._pool = pool
        self._inner = inner

    def _start(self) -> float:
        pool = self._pool
        if pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
            POOL_WAITS.inc()
        return time.perf_counter()

    async def __aenter__(self) -> Any:
        started = self._start()
        try:
            return await self._inner.__aenter__()
        finally:
            POOL_ACQUIRE_DURATION.observe(time.perf_counter() - started)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    def __await__(self) -> Any:
        started = self._start()
        try:
            return (yield from self._inner.__await__())
        finally:
            POOL_ACQUIRE_DURATION.observe(time.perf_counter() - started)


class _MeteredPool(asyncpg.Pool):
    """An asyncpg pool whose ``acquire`` is metered (same layout: no new slots)."""

    __slots__ = ()

    def acquire(self, *, timeout: float | None = None) -> Any:
        return _MeteredAcquire(self, super().acquire(timeout=timeout))


class _PoolCollector(Collector):
    """Size, in-use and maximum connections of the open pools, read at scrape time."""

    def __init__(self) -> None:
        self.pools: list[asyncpg.Pool] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.pools = [pool for pool in self.pools if not pool.is_closing()]
        size, idle, maximum = 0, 0, 0
        for pool in self.pools:
            size += pool.get_size()
            idle += pool.get_idle_size()
            maximum += pool.get_max_size()
        yield GaugeMetricFamily(
            "ragkeeper_agent_db_pool_connections",
            "Connections the database pool holds open (idle and in use).",
            value=size,
        )
        yield GaugeMetricFamily(
            "ragkeeper_agent_db_pool_connections_in_use",
            "Connections of the database pool currently acquired.",
            value=size - idle,
        )
        yield GaugeMetricFamily(
            "ragkeeper_agent_db_pool_max_connections",
            "Maximum size of the database pool (DB_POOL_MAX_SIZE).",
            value=maximum,
        )


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


class RedisState(Protocol):
    @property
    def up(self) -> bool: ...

    @property
    def closed(self) -> bool: ...


class _RedisUpCollector(Collector):
    """``ragkeeper_agent_redis_up``: 1 while every open Redis client's last call answered, 0
    during an outage. The family is always described (so the alert's name is known), but it
    has a sample only while a client is open, i.e. only with REDIS_URL set."""

    def __init__(self) -> None:
        self.clients: list[RedisState] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.clients = [client for client in self.clients if not client.closed]
        family = GaugeMetricFamily(
            "ragkeeper_agent_redis_up",
            "1 while Redis answers, 0 from a failed call until a call succeeds again "
            "(exported only with REDIS_URL set).",
        )
        if self.clients:
            family.add_metric([], float(all(client.up for client in self.clients)))
        yield family


_REDIS_UP = _RedisUpCollector()
REGISTRY.register(_REDIS_UP)


def watch_redis(client: RedisState) -> None:
    """Export ``client``'s state as ``ragkeeper_agent_redis_up`` until it is closed."""
    _REDIS_UP.clients.append(client)


def instrument_pool(pool: asyncpg.Pool) -> None:
    """Meter ``pool``: its acquires from now on, and its size at every scrape."""
    if type(pool) is asyncpg.Pool:
        pool.__class__ = _MeteredPool
    _POOLS.pools.append(pool)


def metric_names() -> list[str]:
    """Every metric family name this service exports (as they appear in /metrics)."""
    names: set[str] = set()
    for collector in REGISTRY.collect():
        if collector.type == "counter":
            names.add(f"{collector.name}_total")
        else:
            names.add(collector.name)
    return sorted(names)
