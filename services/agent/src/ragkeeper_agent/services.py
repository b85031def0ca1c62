"""The long-lived clients one app instance owns, opened and closed by its lifespan.

``Services`` is built once per app (never a module global), so tests and
benchmarks can run several apps side by side, each handing in its own
embedder. Routes receive it through the ``ServicesDep`` alias in ``deps.py``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncpg
import httpx
from pydantic_ai.models import Model

from ragkeeper_knowledge import KnowledgeStore, create_pool
from ragkeeper_knowledge.embedding.base import Embedder, ensure_dimension
from ragkeeper_knowledge.errors import EmbeddingModelMismatch
from ragkeeper_knowledge.rerank import Reranker, create_reranker

from .agent import Deps, build_agent
from .auth import Authenticator
from .chat import ChatRunner
from .history import ConversationStore
from .llm import build_model
from .memory import MemoryStore
from .ratelimit import LocalRateLimiter, RateLimiter
from .readiness import Readiness
from .redis_cache import CachedEmbedder, RedisClient, SearchCache
from .settings import Settings
from .tabular import ReadOnlySQL
from .websearch import WebSearch

logger = logging.getLogger(__name__)


def embedder_from_settings(settings: Settings) -> Embedder:
    """The same embedder as the ingestion job, from ``settings.embedding`` (``EMBEDDING_*``)."""
    from ragkeeper_knowledge.embedding import create_embedder

    return create_embedder(settings.embedding)


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    http: httpx.AsyncClient
    embedder: Embedder
    store: KnowledgeStore
    conversations: ConversationStore
    limiter: RateLimiter
    auth_failures: RateLimiter
    """Failed authentications per client IP (AUTH_FAILURES_PER_MINUTE)."""
    public_limiter: LocalRateLimiter
    """Requests per client IP to the unauthenticated routes that do work (/readyz)."""
    readiness: Readiness
    sql: ReadOnlySQL
    web: WebSearch | None
    auth: Authenticator
    runner: ChatRunner
    reranker: Reranker | None = None
    """The second-stage reranking service (RERANK_*); None while RERANK_PROVIDER is none."""
    redis: RedisClient | None = None
    """The Redis client (REDIS_URL) behind the caches and the rate limit; None without it."""
    search_cache: SearchCache | None = None
    memory: MemoryStore | None = None
    """The users' long-term memories; None with MEMORY_ENABLED=false."""
    draining: asyncio.Event = field(default_factory=asyncio.Event)

    def deps(self, user_id: str | None = None, session_id: str | None = None) -> Deps:
        """Fresh per-run dependencies (the citation list is per run).

        ``user_id`` gives the run the user's memories (MEMORY_ENABLED); without it, none.
        """
        return Deps(
            store=self.store,
            embedder=self.embedder,
            sql=self.sql,
            web=self.web,
            search_k=self.settings.search_k,
            search_weights=(self.settings.search_vector_weight, self.settings.search_text_weight),
            reranker=self.reranker,
            rerank_candidates=self.settings.rerank.candidates,
            read_max_chars=self.settings.read_document_max_chars,
            search_cache=self.search_cache,
            sql_enabled=self.settings.sql_tool_enabled,
            memory=self.memory if user_id else None,
            user_id=user_id,
            session_id=session_id,
        )

    async def check_embedding_model(self) -> None:
        """Refuse to search a store built with another model.

        docs/architecture.md, invariant 5: one embedding space.
        """
        recorded = await self.store.embedding_model()
        if recorded is None:  # nothing ingested yet: nothing to disagree with
            return
        # An API model configured without EMBEDDING_DIMENSION learns it from one call.
        ours = (self.embedder.model_name, await ensure_dimension(self.embedder))
        if recorded is not None and recorded != ours:
            raise EmbeddingModelMismatch(
                f"the knowledge store holds vectors from {recorded[0]!r} (dimension "
                f"{recorded[1]}), but the agent is configured with {ours[0]!r} (dimension "
                f"{ours[1]}); set the same EMBEDDING_* values as the ingestion job"
            )

    async def aclose(self) -> None:
        if self.reranker is not None:
            await self.reranker.aclose()
        await self.embedder.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.http.aclose()
        await self.pool.close()


async def open_services(
    settings: Settings,
    *,
    draining: asyncio.Event,
    embedder: Embedder | None = None,
    model: Model | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Services:
    """Open the pool and the HTTP clients; build the agent.

    ``create_pool`` checks the schema revision first: at head it runs no DDL (the agent's
    role needs none); behind head it migrates only if the role may, else it raises a
    ``ConfigurationError`` naming both revisions (docs/deploy.md, "Database roles").
    """
    pool = await create_pool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
    )
    http = httpx.AsyncClient(transport=transport, timeout=15.0, follow_redirects=False)
    reranker = None
    # Like the reranker, Redis is not called at start-up: a Redis that is down must not stop
    # the agent (everything runs without it until it answers).
    redis = RedisClient.from_settings(settings) if settings.redis_configured else None
    try:
        embedder = embedder or embedder_from_settings(settings)
        if redis is not None:
            embedder = CachedEmbedder(
                embedder, redis, ttl_seconds=settings.redis_embedding_ttl_seconds
            )
        model = model or build_model(settings)
        # Built, never called here: a reranking service that is down must not stop start-up
        # (searches fall back to the fused order until it answers).
        reranker = create_reranker(settings.rerank)
        services = _assemble(settings, pool, http, embedder, model, draining, reranker, redis)
        await services.check_embedding_model()
    except BaseException:
        if reranker is not None:
            await reranker.aclose()
        if redis is not None:
            await redis.aclose()
        await http.aclose()
        await pool.close()
        raise
    if redis is not None:
        redis.start()
    logger.info(
        "agent ready: model=%s embedder=%s reranker=%s auth=%s web_search=%s redis=%s",
        model.model_name,
        embedder.model_name,
        reranker.name if reranker else "off",
        settings.auth_mode,
        services.web.backend if services.web else "off",
        "on" if redis else "off",
    )
    return services


def _assemble(
    settings: Settings,
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    embedder: Embedder,
    model: Model,
    draining: asyncio.Event,
    reranker: Reranker | None = None,
    redis: RedisClient | None = None,
) -> Services:
    """Every client over the one pool, HTTP client and Redis client; nothing here does I/O."""
    store = KnowledgeStore(pool)
    return Services(
        settings=settings,
        pool=pool,
        http=http,
        embedder=embedder,
        store=store,
        conversations=ConversationStore(pool),
        limiter=RateLimiter(pool, settings.rate_limit_per_minute, redis),
        auth_failures=RateLimiter(pool, settings.auth_failures_per_minute, redis),
        public_limiter=LocalRateLimiter(settings.public_requests_per_minute),
        readiness=Readiness(pool),
        sql=ReadOnlySQL(
            pool,
            timeout_ms=settings.sql_statement_timeout_ms,
            max_rows=settings.sql_max_rows,
        ),
        web=_web_search(settings, http),
        auth=Authenticator(settings, http),
        runner=ChatRunner(
            build_agent(model),
            model_name=model.model_name,
            max_requests=settings.agent_max_requests,
            draining=draining,
            grace_seconds=settings.shutdown_grace_seconds,
        ),
        reranker=reranker,
        redis=redis,
        search_cache=None
        if redis is None
        else SearchCache(redis, store, embedder, ttl_seconds=settings.redis_search_ttl_seconds),
        memory=MemoryStore(pool) if settings.memory_enabled else None,
        draining=draining,
    )


def _web_search(settings: Settings, http: httpx.AsyncClient) -> WebSearch | None:
    """The web search tool's backend, or None when neither SearXNG nor Brave is configured."""
    if not settings.web_search_configured:
        return None
    return WebSearch(
        http,
        searxng_url=settings.searxng_url,
        brave_api_key=settings.brave_api_key.get_secret_value(),
        brave_api_url=settings.brave_api_url,
        timeout=settings.web_search_timeout_seconds,
    )
