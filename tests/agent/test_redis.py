"""Redis on the serving path (REDIS_URL): the query-embedding cache, the search-result cache,
the shared rate limit, and every way Redis can fail (killed, slow, garbage), against a real
``redis-server`` of each test's own (tests/redis_server.py) and the real app over uvicorn.

Counts come from the agent's own metrics (``ragkeeper_agent_cache_requests_total``,
``ragkeeper_agent_redis_fallbacks_total``, ``ragkeeper_agent_redis_up``), read as differences
around each step since the registry is the process's; embedder calls are counted at the
embedder the app was given (below the cache).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
from redis.asyncio import Redis

from ragkeeper_agent import Settings
from ragkeeper_agent.metrics import REGISTRY
from ragkeeper_agent.redis_cache import CachedEmbedder, RedisClient
from ragkeeper_agent.services import Services
from ragkeeper_knowledge.embedding import HashingEmbedder
from ragkeeper_knowledge.rerank import RerankConfig
from tests.fake_rerank import FakeRerankService
from tests.rag.test_cli import job_env, run_job
from tests.redis_server import RedisServer, redis_server
from tests.support import serve_asgi

from .conftest import PIPELINE, RunningServer, auth, make_token

PREFIX = "ragkeeper:"
PASSWORD = "redis-test-pw-Zq81"  # pragma: allowlist secret
WRONG_PASSWORD = "wrong-pw-1"  # pragma: allowlist secret


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, counting the queries that reach it (below the Redis cache)."""

    def __init__(self, dimension: int = 64) -> None:
        super().__init__(dimension)
        self.queries: list[str] = []

    async def embed_query(self, text: str) -> list[float]:
        self.queries.append(text)
        return await super().embed_query(text)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def cache(name: str, result: str) -> float:
    return sample("ragkeeper_agent_cache_requests_total", cache=name, result=result)


def fallbacks(component: str | None = None, reason: str | None = None) -> float:
    """Fallbacks counted so far, summed over the components and reasons not named."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name != "ragkeeper_agent_redis_fallbacks":
            continue
        for s in metric.samples:
            if not s.name.endswith("_total"):
                continue
            if component and s.labels["component"] != component:
                continue
            if reason and s.labels["reason"] != reason:
                continue
            total += s.value
    return total


def redis_up() -> float | None:
    return REGISTRY.get_sample_value("ragkeeper_agent_redis_up")


def services_of(agent: RunningServer) -> Services:
    services: Services = agent.app.state.services
    return services


AgentOn = Callable[..., AbstractAsyncContextManager[tuple[RunningServer, httpx.AsyncClient]]]


@pytest.fixture
def agent_on(server_factory: Callable[..., Any]) -> AgentOn:
    """``agent_on(redis_url, **settings)``: the app on that Redis, and a client of it."""

    @asynccontextmanager
    async def serve(
        redis_url: str, **options: Any
    ) -> AsyncIterator[tuple[RunningServer, httpx.AsyncClient]]:
        async with (
            server_factory(redis_url=redis_url, **options) as agent,
            agent.client() as client,
        ):
            yield agent, client

    return serve


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
async def raw(redis: RedisServer) -> AsyncIterator[Redis]:
    """A plain client to look into (and tamper with) the test's Redis."""
    client = Redis.from_url(redis.url)
    try:
        yield client
    finally:
        await client.aclose()


async def keys(raw: Redis, kind: str) -> list[bytes]:
    return [key async for key in raw.scan_iter(match=f"{PREFIX}{kind}:*")]


async def search(client: httpx.AsyncClient, user: str = "reader", **body: Any) -> list[Any]:
    r = await client.post("/api/search", json=body, headers=auth(user))
    assert r.status_code == 200, r.text
    result: list[Any] = r.json()
    return result


# -- the caches ---------------------------------------------------------------------------


async def test_embedding_cache_miss_then_hit_stores_float32_bytes(
    agent_on: AgentOn, redis: RedisServer, raw: Redis
) -> None:
    embedder = CountingEmbedder()
    async with agent_on(redis.url, embedder=embedder) as (agent, c):
        assert isinstance(services_of(agent).embedder, CachedEmbedder)
        misses, hits = cache("embedding", "miss"), cache("embedding", "hit")
        first = await search(c, query="paid annual leave", k=2)
        # Another k is another search (a search-cache miss), but the same text to embed.
        second = await search(c, query="paid annual leave", k=3)
    assert embedder.queries == ["paid annual leave"]
    assert (cache("embedding", "miss") - misses, cache("embedding", "hit") - hits) == (1, 1)
    assert second[:2] == first, "the cached vector searches exactly like the fresh one"
    [key] = await keys(raw, "emb")
    assert key.decode().startswith(f"{PREFIX}emb:hashing-v1:64:")
    value = await raw.get(key)
    assert value is not None and len(value) == 64 * 4
    expected = np.asarray(await HashingEmbedder(64).embed_query("paid annual leave"), np.float32)
    assert np.array_equal(np.frombuffer(value, np.float32), expected)
    assert 0 < await raw.ttl(key) <= 604_800


async def test_search_cache_hits_for_the_same_search_on_both_paths(
    agent_on: AgentOn, redis: RedisServer, raw: Redis
) -> None:
    embedder = CountingEmbedder()
    async with agent_on(redis.url, embedder=embedder, redis_search_ttl_seconds=120) as (_, c):
        misses, hits = cache("search", "miss"), cache("search", "hit")
        first = await search(c, query="lost devices", k=3)
        again = await search(c, user="someone-else", query="lost devices", k=3)
        assert again == first
        assert (cache("search", "miss") - misses, cache("search", "hit") - hits) == (1, 1)
        assert embedder.queries == ["lost devices"], "a search-cache hit embeds nothing"
        # Anything that decides the result is part of the key: each of these misses.
        await search(c, query="lost devices", k=4)
        await search(c, query="lost devices", k=3, pipeline_id=PIPELINE)
        await search(c, query="lost devices", k=3, metadata_filter={"title": "Security handbook"})
        await search(c, query="Lost devices", k=3)
        assert cache("search", "miss") - misses == 5
        assert len(await keys(raw, "search")) == 5
        assert all([0 < await raw.ttl(key) <= 120 for key in await keys(raw, "search")])
        # The agent's search tool is the same retrieve(): a second identical turn hits.
        hits = cache("search", "hit")
        for _ in range(2):
            r = await c.post(
                "/api/pydantic-agent",
                json={"query": "How many days of annual leave do employees get?"},
                headers=auth("chatter"),
            )
            assert r.status_code == 200
        assert cache("search", "hit") - hits == 1


async def test_reranking_runs_on_every_request_over_the_cached_hits(
    agent_on: AgentOn, redis: RedisServer, raw: Redis
) -> None:
    service = FakeRerankService("tei", score=lambda query, text: 0.9 if "encryption" in text else 0)
    async with serve_asgi(service) as base_url:
        rerank = RerankConfig(provider="tei", base_url=base_url, candidates=5)
        async with agent_on(redis.url, rerank=rerank) as (_, c):
            hits = cache("search", "hit")
            first = await search(c, query="Berlin office and encryption", k=2)
            second = await search(c, query="Berlin office and encryption", k=2)
    assert cache("search", "hit") - hits == 1
    assert len(service.requests) == 2, "the reranker scored the cached hits too"
    assert second == first and first[0]["title"] == "Security handbook"
    [key] = await keys(raw, "search")
    cached = json.loads(await raw.get(key))
    assert len(cached) == 5, "the hybrid search's RERANK_CANDIDATES hits, before reranking"


async def test_a_finished_sync_makes_cached_searches_miss(
    agent_on: AgentOn,
    database_url: str,
    redis: RedisServer,
    tmp_path: Path,
) -> None:
    """The real ingestion job changes a document; the same search then misses and answers
    the new content, with and without a pipeline filter (one counter, and the sum)."""
    pipeline = "default/redis-sync"
    folder = tmp_path / "docs"
    folder.mkdir()
    doc = folder / "kestrel.md"
    env = job_env(
        database_url,
        tmp_path,
        RAG_PIPELINE_ID=pipeline,
        RAG_WATCH_DIRECTORY=str(folder),
        EMBEDDING_DIMENSION="64",  # the agent's store holds hashing-v1 vectors of 64
    )

    async def sync(price: str) -> None:
        doc.write_text(f"# Kestrel\n\nThe Kestrel thermostat costs {price} EUR.\n")
        code, stats, stderr = await asyncio.to_thread(run_job, env)
        assert code == 0, stderr
        assert stats["status"] == "success", stats

    await sync("199")
    async with agent_on(redis.url) as (_, c):
        for body in ({"pipeline_id": pipeline}, {}):
            query = {"query": "Kestrel thermostat price", "k": 2, **body}
            misses, hits = cache("search", "miss"), cache("search", "hit")
            assert "199 EUR" in (await search(c, **query))[0]["content"]
            assert "199 EUR" in (await search(c, **query))[0]["content"]
            assert (cache("search", "miss") - misses, cache("search", "hit") - hits) == (1, 1)
        await sync("249")
        for body in ({"pipeline_id": pipeline}, {}):
            query = {"query": "Kestrel thermostat price", "k": 2, **body}
            misses = cache("search", "miss")
            hits = await search(c, **query)
            assert cache("search", "miss") - misses == 1
            assert "249 EUR" in hits[0]["content"]
            assert all("199 EUR" not in hit["content"] for hit in hits)


# -- the rate limit -----------------------------------------------------------------------


async def test_two_agents_on_one_redis_admit_exactly_the_limit(
    server_factory: Callable[..., Any],
    redis: RedisServer,
    raw: Redis,
    admin_conn: asyncpg.Connection,
) -> None:
    limit, sent = 7, 20
    options = {
        "redis_url": redis.url,
        "rate_limit_per_minute": limit,
        "auth_failures_per_minute": 3,
        "redis_socket_timeout_seconds": 2.0,  # a loaded test machine must not fall back here
    }
    before = fallbacks("rate_limiter")
    async with (
        server_factory(**options) as one,
        server_factory(**options) as two,
        one.client() as c1,
        two.client() as c2,
    ):
        clients = [c1, c2]
        responses = await asyncio.gather(
            *(
                clients[i % 2].post("/api/search", json={"query": "leave"}, headers=auth("burst"))
                for i in range(sent)
            )
        )
        codes = Counter(r.status_code for r in responses)
        assert codes == {200: limit, 429: sent - limit}
        assert all(
            1 <= int(r.headers["retry-after"]) <= 60 for r in responses if r.status_code == 429
        )
        # Which replica's requests got the slots depends on scheduling; that together they got
        # exactly the limit is the point.
        assert await raw.zcard(f"{PREFIX}rl:burst") == limit
        # Failed authentications per client IP: counted in the same Redis, across replicas.
        bad = {"Authorization": f"Bearer {make_token('x', secret='y' * 40)}"}
        failures = [
            (await clients[i % 2].post("/api/search", json={"query": "q"}, headers=bad)).status_code
            for i in range(3)
        ]
        assert failures == [401, 401, 401]
        r = await c2.post("/api/search", json={"query": "q"}, headers=auth("valid-user"))
        assert r.status_code == 429, "the IP's failure window is full on the other replica too"
    assert fallbacks("rate_limiter") == before, "Redis decided every request"
    rows = await admin_conn.fetchval(
        "SELECT count(*) FROM requests WHERE user_id = 'burst' OR user_id LIKE 'authfail:%'"
    )
    assert rows == 0, "nothing was counted in Postgres"


# -- failures ----------------------------------------------------------------------------


async def test_redis_killed_mid_load_no_5xx_then_used_again(
    agent_on: AgentOn, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ragkeeper_agent.redis_cache")
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()
    queries = ["annual leave", "lost devices", "Berlin office"]

    async def load(client: httpx.AsyncClient, worker: int) -> None:
        n = worker
        while not stop.is_set():
            body = {"query": queries[n % len(queries)], "k": 2}
            r = await client.post("/api/search", json=body, headers=auth("loader"))
            statuses[r.status_code] += 1
            n += 1

    fast_retry = {"redis_retry_seconds": 0.2, "rate_limit_per_minute": 1_000_000}
    async with agent_on(redis.url, **fast_retry) as (_, c):
        workers = [asyncio.create_task(load(c, i)) for i in range(4)]
        try:
            await asyncio.sleep(0.3)
            assert redis_up() == 1
            before = fallbacks()
            await asyncio.to_thread(redis.kill)
            await asyncio.sleep(0.6)
            assert fallbacks() > before, "requests went on without Redis, counted"
            assert redis_up() == 0
            await asyncio.to_thread(redis.start)  # same port, empty
            restarted, hits = time.monotonic(), cache("search", "hit")
            while cache("search", "hit") == hits:
                assert time.monotonic() - restarted < 5, "no cache hit within 5 s of the restart"
                await asyncio.sleep(0.02)
            assert redis_up() == 1
        finally:
            stop.set()
            await asyncio.gather(*workers)
    assert set(statuses) == {200}, statuses
    messages = [record.getMessage() for record in caplog.records]
    assert sum(m.startswith("Redis is unavailable") for m in messages) == 1, messages
    assert sum(m.startswith("Redis answers again") for m in messages) == 1, messages


async def test_a_redis_slower_than_the_timeout_is_skipped(
    agent_on: AgentOn, redis: RedisServer, raw: Redis
) -> None:
    async with agent_on(
        redis.url,
        rate_limit_per_minute=0,  # no limiter: the search cache is the first to ask Redis
        auth_failures_per_minute=0,
        redis_socket_timeout_seconds=0.1,
        redis_retry_seconds=0.3,
    ) as (_, c):
        await search(c, query="kitchen cleaning", k=2)  # cached; connections open
        timeouts, skipped = fallbacks("search_cache", "timeout"), fallbacks(reason="unavailable")
        sleeper = asyncio.create_task(raw.execute_command("DEBUG", "SLEEP", "0.8"))
        await asyncio.sleep(0.1)  # the server is asleep now
        started = time.monotonic()
        await search(c, query="kitchen cleaning", k=2)
        slow = time.monotonic() - started
        started = time.monotonic()
        await search(c, query="kitchen cleaning", k=2)
        skipping = time.monotonic() - started
        assert fallbacks("search_cache", "timeout") - timeouts == 1
        assert fallbacks(reason="unavailable") - skipped >= 2, "the next one skips Redis"
        assert slow < 0.6, "one timeout, not Redis's answer time"
        assert skipping < slow
        await sleeper
        await asyncio.sleep(0.35)  # the retry interval is over: Redis is asked again
        hits = cache("search", "hit")
        await search(c, query="kitchen cleaning", k=2)
        assert cache("search", "hit") - hits == 1
        assert redis_up() == 1


async def test_garbage_in_redis_is_a_miss_counted_invalid(
    agent_on: AgentOn, redis: RedisServer, raw: Redis
) -> None:
    embedder = CountingEmbedder()
    async with agent_on(redis.url, embedder=embedder) as (_, c):
        expected = await search(c, query="Berlin office hours", k=2)
        [emb_key], [search_key] = await keys(raw, "emb"), await keys(raw, "search")
        for garbage in (b"garbage", b'[{"chunk_id": "not a hit"}]'):
            await raw.set(emb_key, garbage[:12])  # 12 bytes: not 64 float32s
            await raw.set(search_key, garbage)
            invalid = (
                fallbacks("search_cache", "invalid"),
                fallbacks("embedding_cache", "invalid"),
            )
            misses = cache("search", "miss")
            assert await search(c, query="Berlin office hours", k=2) == expected
            assert fallbacks("search_cache", "invalid") - invalid[0] == 1
            assert fallbacks("embedding_cache", "invalid") - invalid[1] == 1
            assert cache("search", "miss") - misses == 1
        assert len(embedder.queries) == 3, "each garbage entry was a miss, embedded again"
        # ...and overwritten by a good value: the next search hits.
        hits = cache("search", "hit")
        assert await search(c, query="Berlin office hours", k=2) == expected
        assert cache("search", "hit") - hits == 1
        # A key of another type (an error reply) is not an outage either.
        await raw.delete(search_key)
        await raw.rpush(search_key, "x")
        await raw.set(f"{PREFIX}rl:reader", "not a sorted set")
        invalid = (fallbacks("search_cache", "invalid"), fallbacks("rate_limiter", "invalid"))
        assert await search(c, query="Berlin office hours", k=2) == expected
        assert fallbacks("search_cache", "invalid") - invalid[0] == 1
        assert fallbacks("rate_limiter", "invalid") - invalid[1] == 1, "Postgres decided"
        assert redis_up() == 1


async def test_password_from_redis_password(
    agent_on: AgentOn, admin_conn: asyncpg.Connection
) -> None:
    with redis_server("--requirepass", PASSWORD) as secured:
        async with agent_on(secured.url, redis_password=PASSWORD) as (_, c):
            hits = cache("search", "hit")
            await search(c, query="encryption", k=1)
            await search(c, query="encryption", k=1)
            assert cache("search", "hit") - hits == 1
        # A wrong password is an outage like any other: served without Redis.
        async with agent_on(secured.url, redis_password=WRONG_PASSWORD) as (_, c):
            before = fallbacks("rate_limiter", "unavailable")
            rows = await admin_conn.fetchval("SELECT count(*) FROM requests")
            await search(c, user="pw-user", query="encryption", k=1)
            assert fallbacks("rate_limiter", "unavailable") > before
            assert await admin_conn.fetchval("SELECT count(*) FROM requests") == rows + 1, (
                "Postgres admitted the request"
            )
            assert redis_up() == 0


async def test_without_redis_url_no_redis_client_is_created(
    server_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a Redis client was created without REDIS_URL")

    monkeypatch.setattr(RedisClient, "from_settings", refuse)
    monkeypatch.setattr(Redis, "__init__", refuse)
    async with server_factory() as agent, agent.client() as c:
        services = services_of(agent)
        assert services.redis is None and services.search_cache is None
        assert services.deps().search_cache is None
        assert isinstance(services.embedder, HashingEmbedder), "not wrapped"
        assert all(limiter._redis is None for limiter in (services.limiter, services.auth_failures))
        await search(c, query="leave", k=1)
        metrics = (await c.get("/metrics")).text
    assert "# TYPE ragkeeper_agent_redis_up gauge" in metrics
    assert "\nragkeeper_agent_redis_up " not in metrics, "no sample without REDIS_URL"


# -- TLS ---------------------------------------------------------------------------------


async def test_rediss_verifies_the_server_against_the_system_cas() -> None:
    settings = Settings(
        database_url="postgresql://x/y",
        auth_mode="disabled",
        redis_url="rediss://cache.example:6380/2",
        redis_password=PASSWORD,
        redis_max_connections=7,
    )
    client = RedisClient.from_settings(settings)
    try:
        pool = client._redis.connection_pool
        assert pool.max_connections == 7
        connection: Any = pool.make_connection()
        assert connection.ssl_context.ca_certs is None, "no CA file: the system's CAs"
        context = connection.ssl_context.get()  # what the TLS handshake will use
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert (connection.host, connection.port, connection.db) == ("cache.example", 6380, 2)
        assert connection.password == PASSWORD
        assert (connection.socket_timeout, connection.socket_connect_timeout) == (0.1, 0.5)
    finally:
        await client.aclose()
