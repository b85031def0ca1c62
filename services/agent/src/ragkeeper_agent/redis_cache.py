"""Optional Redis on the serving path: one client wrapper and the two caches built on it.

Nothing here runs without ``REDIS_URL``: the services then hold no :class:`RedisClient`, the
embedder is not wrapped, ``retrieve()`` finds no search cache and the rate limiter keeps to
Postgres (docs/redis.md).

:class:`RedisClient` is the one way the agent talks to Redis (the query-embedding cache, the
search-result cache and the rate limiter's Redis window all go through :meth:`RedisClient.run`).
Each call is timed (``ragkeeper_agent_redis_duration_seconds``); a failure never reaches the
request: a connection error or timeout marks Redis down for ``REDIS_RETRY_SECONDS``, during
which every call is skipped at once (so an outage costs one timeout per interval, not one per
request), and the first call after the interval tries again. Every request that goes on
without Redis is counted in ``ragkeeper_agent_redis_fallbacks_total`` by component and reason.
The start of an outage is logged once (a warning) and its end once (info); while Redis is
down, a background ping also tries it once per interval, so ``ragkeeper_agent_redis_up`` turns
back to 1 on an idle replica too. An error *reply* (Redis answered, e.g. a key holding another
type) and a value that does not decode are not an outage: the lookup is a miss, counted with
the reason ``invalid``.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np
from pydantic import TypeAdapter, ValidationError
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeout

from ragkeeper_knowledge import KnowledgeStore, SearchHit
from ragkeeper_knowledge.embedding.base import Embedder, ensure_dimension

from ._version import __version__
from .metrics import CACHE_REQUESTS, REDIS_DURATION, REDIS_FALLBACKS, watch_redis

if TYPE_CHECKING:
    from .agent import SearchArgs
    from .settings import Settings

logger = logging.getLogger(__name__)

CacheComponent = Literal["embedding_cache", "search_cache"]
Component = Literal[CacheComponent, "rate_limiter"]
Reason = Literal["unavailable", "timeout", "invalid"]
T = TypeVar("T")
V = TypeVar("V")

# Error replies that say the server cannot serve us now (a replica after a failover, memory
# full, an ACL without our commands): an outage, unlike an error about one key's value.
_SERVER_STATE_REPLIES = (ReadOnlyError, OutOfMemoryError, NoPermissionError)


class Skipped(enum.Enum):
    """What :meth:`RedisClient.run` returns when the call did not give an answer."""

    SKIPPED = "skipped"


SKIPPED = Skipped.SKIPPED


def _reason(exc: BaseException) -> Reason:
    # The pool's "No connection available." is a ConnectionError raised from a timeout.
    timeouts = (RedisTimeout, TimeoutError)
    if isinstance(exc, timeouts) or isinstance(exc.__cause__, timeouts):
        return "timeout"
    return "unavailable"


class RedisClient:
    """The agent's Redis connection pool with the outage bookkeeping every caller shares."""

    def __init__(self, redis: Redis, *, prefix: str, retry_seconds: float) -> None:
        self._redis = redis
        self.prefix = prefix
        self._retry_seconds = retry_seconds
        self._up = True
        self._changed_at = 0.0  # when the last outage began or ended (time.monotonic)
        self._retry_at = 0.0
        self._invalid_logged_until = 0.0
        self._closed = False
        self._watchdog: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisClient:
        """A client from REDIS_*; no connection is opened until the first call."""
        password = settings.redis_password.get_secret_value() or None
        pool = BlockingConnectionPool.from_url(
            settings.redis_url.get_secret_value(),
            password=password,  # a password in the URL wins; the settings refuse a different one
            max_connections=settings.redis_max_connections,
            # waiting for a free connection is bounded like a command
            timeout=settings.redis_socket_timeout_seconds,
            socket_timeout=settings.redis_socket_timeout_seconds,
            socket_connect_timeout=settings.redis_connect_timeout_seconds,
            # No retry after a timeout: it marks Redis down instead of doubling the request's
            # wait. One immediate retry, on a new connection, after a connection error: after a
            # Redis restart or failover, pooled connections fail once each ("closed by server")
            # although Redis answers; when Redis is really down, a refused connection is instant.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            driver_info=None,  # no CLIENT SETINFO round trips on connect
        )
        return cls(
            Redis.from_pool(pool),
            prefix=settings.redis_key_prefix,
            retry_seconds=settings.redis_retry_seconds,
        )

    # ---------------------------------------------------------------- state

    @property
    def up(self) -> bool:
        """False from a failed call until a call succeeds again."""
        return self._up

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def unavailable(self) -> bool:
        """True while calls are being skipped (down, and the retry interval not over)."""
        return not self._up and time.monotonic() < self._retry_at

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def register_script(self, script: str) -> AsyncScript:
        return self._redis.register_script(script)

    def start(self) -> None:
        """Export the state as ``ragkeeper_agent_redis_up``; ping once per interval while down."""
        watch_redis(self)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def aclose(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        await self._redis.aclose()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._retry_seconds)
            if not self._up:
                await self.run(None, "ping", lambda redis: redis.ping())

    # ----------------------------------------------------------------- calls

    async def run(
        self,
        component: Component | None,
        operation: str,
        call: Callable[[Redis], Awaitable[T]],
    ) -> T | Skipped:
        """``call``'s answer, or :data:`SKIPPED` when Redis is down or failed (counted as a
        fallback of ``component``; None: the watchdog's ping, not a request's)."""
        if self._skip():
            self.fallback(component, "unavailable")
            return SKIPPED
        started_at, started = time.monotonic(), time.perf_counter()
        try:
            result = await call(self._redis)
        except ResponseError as exc:
            if isinstance(exc, _SERVER_STATE_REPLIES):
                self._failed(component, "unavailable", exc, started_at)
            else:
                self.invalid(component, f"an error reply to {operation} ({type(exc).__name__})")
            return SKIPPED
        except (RedisError, OSError) as exc:
            self._failed(component, _reason(exc), exc, started_at)
            return SKIPPED
        except Exception as exc:  # a cache must never fail a request; logged once per outage
            self._failed(component, "unavailable", exc, started_at)
            return SKIPPED
        finally:
            REDIS_DURATION.labels(operation).observe(time.perf_counter() - started)
        self._answered(started_at)
        return result

    async def lookup(
        self, component: CacheComponent, key: str, decode: Callable[[object], V | None]
    ) -> V | None | Skipped:
        """``key``'s value decoded (a hit), None (a miss: absent, or not decoding, which is
        also counted as ``invalid``), or :data:`SKIPPED` (Redis gave no answer)."""
        cached = await self.run(component, "get", lambda redis: redis.get(key))
        if cached is SKIPPED:
            return SKIPPED
        cache = component.removesuffix("_cache")
        value = decode(cached)
        if value is not None:
            CACHE_REQUESTS.labels(cache, "hit").inc()
            return value
        if cached is not None:
            self.invalid(component, f"a {cache} cache entry did not decode")
        CACHE_REQUESTS.labels(cache, "miss").inc()
        return None

    async def store(self, component: CacheComponent, key: str, value: bytes, ttl: int) -> None:
        await self.run(component, "set", lambda redis: redis.set(key, value, ex=ttl))

    def fallback(self, component: Component | None, reason: Reason) -> None:
        if component is not None:
            REDIS_FALLBACKS.labels(component, reason).inc()

    def invalid(self, component: Component | None, what: str) -> None:
        """Redis answered something unusable: a miss for the caller, counted, logged at most
        once per retry interval."""
        self.fallback(component, "invalid")
        now = time.monotonic()
        if now >= self._invalid_logged_until:
            self._invalid_logged_until = now + self._retry_seconds
            logger.warning("Redis: %s; treated as a miss", what)

    def _skip(self) -> bool:
        if self._up:
            return False
        now = time.monotonic()
        if now < self._retry_at:
            return True
        self._retry_at = now + self._retry_seconds  # this call is the interval's one try
        return False

    # A call that began before the last change of state says nothing about the present: one
    # caught in flight by the outage and failing after Redis came back, or one that succeeds
    # just after the outage began. Only calls begun since then change the state, so concurrent
    # requests neither log an outage twice nor make it flap.

    def _failed(
        self, component: Component | None, reason: Reason, exc: Exception, started_at: float
    ) -> None:
        self.fallback(component, reason)
        if started_at < self._changed_at:
            return
        now = time.monotonic()
        self._retry_at = now + self._retry_seconds
        if self._up:
            self._up = False
            self._changed_at = now
            logger.warning(
                "Redis is unavailable (%s, %s); serving without it, next try in %g s",
                reason,
                type(exc).__name__,
                self._retry_seconds,
            )

    def _answered(self, started_at: float) -> None:
        if not self._up and started_at >= self._changed_at:
            now = time.monotonic()
            logger.info("Redis answers again after %.1f s; using it again", now - self._changed_at)
            self._up = True
            self._changed_at = now


# ------------------------------------------------------------------ embedding cache


def encode_vector(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def decode_vector(value: object, dimension: int) -> list[float] | None:
    """The vector stored in ``value``, or None when it is not ``dimension`` finite float32s."""
    if not isinstance(value, bytes) or len(value) != 4 * dimension:
        return None
    array = np.frombuffer(value, dtype=np.float32)
    if not np.isfinite(array).all():
        return None
    return [float(x) for x in array]


def text_digest(text: str) -> str:
    # surrogatepass: a model's tool call may carry a lone surrogate; the key must not fail.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class CachedEmbedder:
    """An :class:`Embedder` whose ``embed_query`` is cached in Redis; the rest is the inner's.

    Key: ``<prefix>emb:<model name>:<dimension>:<sha256 of the exact text>``, the model's
    identity as recorded in the store (the agent refuses to start with another one,
    docs/architecture.md invariant 5); value: the vector as float32 bytes, which is what
    pgvector stores anyway, so a cached vector searches exactly like a fresh one.
    """

    def __init__(self, inner: Embedder, redis: RedisClient, *, ttl_seconds: int) -> None:
        self.inner = inner
        self._redis = redis
        self._ttl = ttl_seconds

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    async def probe_dimension(self) -> int:
        return await ensure_dimension(self.inner)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.inner.embed(texts)

    async def embed_query(self, text: str) -> list[float]:
        dimension = await ensure_dimension(self.inner)
        key = self._redis.key("emb", self.inner.model_name, str(dimension), text_digest(text))
        found = await self._redis.lookup(
            "embedding_cache", key, lambda value: decode_vector(value, dimension)
        )
        if isinstance(found, list):
            return found
        vector = await self.inner.embed_query(text)
        if found is None and len(vector) == dimension:  # a miss: Redis answered
            await self._redis.store("embedding_cache", key, encode_vector(vector), self._ttl)
        return vector

    async def aclose(self) -> None:
        await self.inner.aclose()


# ---------------------------------------------------------------------- search cache

_HITS = TypeAdapter(list[SearchHit])


def decode_hits(value: object) -> list[SearchHit] | None:
    """The hits stored in ``value``, or None when it is not a JSON list of search hits."""
    if not isinstance(value, bytes):
        return None
    try:
        return _HITS.validate_json(value, strict=True)
    except ValidationError:
        return None


class SearchCache:
    """The hybrid search's hits (before any reranking), keyed by everything that decides them
    and by the store's generation read at the start of the request."""

    def __init__(
        self, redis: RedisClient, store: KnowledgeStore, embedder: Embedder, *, ttl_seconds: int
    ) -> None:
        self._redis = redis
        self._store = store
        self._embedder = embedder
        self._ttl = ttl_seconds

    async def key(self, args: SearchArgs, generation: int) -> str:
        # Shared by every user on purpose: there are no per-user document permissions (every
        # authenticated user may search every pipeline), so a cached result holds nothing its
        # reader could not get by searching. Should permissions come, the caller's grants
        # must become part of this key.
        material = {
            **asdict(args),  # query, k, pipeline_id, metadata_filter, weights
            "model": [self._embedder.model_name, await ensure_dimension(self._embedder)],
            "generation": generation,
            "agent": __version__,  # a release that ranks differently starts afresh
        }
        canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
        return self._redis.key("search", hashlib.sha256(canonical.encode()).hexdigest())

    async def search(
        self, args: SearchArgs, run: Callable[[], Awaitable[list[SearchHit]]]
    ) -> list[SearchHit]:
        """The cached hits for ``args``, or ``run()``'s, stored for the next request.

        The generation is read first: a sync committed before this request started has
        advanced it, so entries written before that sync are not under this key
        (docs/architecture.md, invariant 8). An entry written under this generation after a
        later sync committed holds newer hits, never older ones.
        """
        if self._redis.unavailable:  # skip the generation read too
            self._redis.fallback("search_cache", "unavailable")
            return await run()
        generation = await self._store.generation(args.pipeline_id)
        key = await self.key(args, generation)
        found = await self._redis.lookup("search_cache", key, decode_hits)
        if found is SKIPPED:
            return await run()
        if found is not None:
            return found
        hits = await run()
        await self._redis.store("search_cache", key, _HITS.dump_json(hits), self._ttl)
        return hits
