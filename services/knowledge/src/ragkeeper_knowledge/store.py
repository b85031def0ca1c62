"""KnowledgeStore: the only code that writes or searches documents.

Why it looks like this (the invariants are those of docs/architecture.md):

* **One transaction per document** (docs/architecture.md, invariant 1):
  ``replace_document`` upserts the metadata row and swaps every chunk and
  tabular row inside a single transaction, so a crash leaves either the old
  document or the new one, never half.
* **One owner per document** (docs/architecture.md, invariant 3): every
  statement that writes is scoped by ``pipeline_id``; document ids embed it,
  and a CHECK constraint enforces that.
* **Unchanged chunks are never re-embedded** (docs/architecture.md, invariant 4):
  ``existing_embeddings`` returns stored vectors for known chunk texts so
  callers embed only new ones; ``existing_captions`` does the same for the
  captions a vision model wrote for images (table ``image_captions``).
* **One embedding space** (docs/architecture.md, invariant 5):
  ``register_embedding_model`` records the model once and gives the vector
  column its dimension (through a SECURITY DEFINER function: the ingestion
  role runs no DDL of its own).
* **Hybrid search with an HNSW index** (docs/architecture.md, invariant 6):
  ``ensure_vector_index`` builds the HNSW index after the first load (faster
  than growing it row by row); search runs HNSW cosine and Postgres full-text
  rankings, each filtered by pipeline/metadata, fused by reciprocal rank,
  because names, codes and rare words are where vectors alone fail. The
  statement is built so its plan is right: filter clauses only when given, the
  vector arm's LIMIT directly on the HNSW index (row numbers after it), and a
  text arm that ranks only what the GIN index pre-limits (AND first, else
  per-term capped matches weighted by their rarity).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .errors import EmbeddingModelMismatch
from .migrate import ADVISORY_LOCK_KEY
from .models import (
    DocumentInfo,
    DocumentText,
    DocumentWrite,
    PipelineState,
    SearchHit,
    StoredVersion,
    document_id,
)

# Reciprocal-rank-fusion constant from Cormack et al. (2009); 60 is the usual choice.
RRF_K = 60
# pgvector's HNSW index on `vector` supports at most 2,000 dimensions; wider models
# are indexed as half-precision (`halfvec`, up to 4,000).
MAX_VECTOR_INDEX_DIM = 2000


# Full text: at most this many chunks per match (the AND match, and each term's match in the
# OR fallback) come from the GIN index, and at most TEXT_RERANK are ranked with ts_rank_cd.
TEXT_MATCH_CAP = 1000
TEXT_RERANK = 200

# Nodes the HNSW search keeps in view (hnsw.ef_search). pgvector's default, 40, finds the exact
# ten nearest up to 300k chunks but only 74% of them at 1M; 200 keeps recall@10 at 0.97 there
# for ~3 ms more (bench/search.py, docs/performance.md "Search").
EF_SEARCH = 200

# Per search transaction. pgvector >= 0.8: keep scanning the HNSW graph until filtered results
# fill LIMIT (relaxed order: the vector arm re-sorts its rows by distance); ef_search ($1) at
# least EF_SEARCH and the number of candidates.
SEARCH_SETTINGS_SQL = (
    "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true),"
    " set_config('hnsw.ef_search', $1, true)"
)

# The hybrid query, built by search_statement(). Formatted in are only constants, the vector
# expression and the filter clauses (which name bind parameters); every value from the caller
# is a bind parameter ($1 query vector, $2 text, $3 candidates, $4 k, then pipeline and filter).
_HYBRID_SQL = """
WITH vec AS (  -- LIMIT on the HNSW index scan; row numbers only after it
    SELECT v.id, row_number() OVER (ORDER BY v.dist, v.id) AS rank
    FROM (
        SELECT d.id, {vec} AS dist
        FROM documents d
        WHERE d.embedding IS NOT NULL{filters}
        ORDER BY {vec}
        LIMIT $3
    ) v
), tq AS (
    SELECT nullif(websearch_to_tsquery('english', $2), ''::tsquery) AS e,
           nullif(websearch_to_tsquery('simple', $2), ''::tsquery) AS s
), hit AS MATERIALIZED (  -- AND semantics, at most the cap from the GIN index
    SELECT d.id
    FROM documents d, tq
    WHERE (d.fts @@ tq.e OR d.fts @@ tq.s){filters}
    LIMIT {cap}
), lex AS MATERIALIZED (  -- OR fallback only: the query's terms as one-lexeme queries
    SELECT w, ('''' || replace(replace(w, '\\', '\\\\'), '''', '''''') || '''')::tsquery AS q
    FROM (
        SELECT unnest(tsvector_to_array(to_tsvector('english', $2))) AS w
        UNION
        SELECT w FROM unnest(tsvector_to_array(to_tsvector('simple', $2))) AS w
        WHERE to_tsvector('english', w) <> ''::tsvector
    ) x
    WHERE (SELECT count(*) FROM hit) < $3
), pair AS MATERIALIZED (  -- each term's matches, capped: the count is its capped df
    SELECT lex.w, m.id
    FROM lex CROSS JOIN LATERAL (
        SELECT d.id FROM documents d WHERE d.fts @@ lex.q{filters} LIMIT {cap}
    ) m
), total AS (  -- chunks in the store: the planner's estimate, at least every term's df
    SELECT greatest(
        (SELECT reltuples FROM pg_class WHERE oid = 'documents'::regclass),
        (SELECT count(*) FROM pair)
    ) AS n
), weight AS MATERIALIZED (  -- rarer terms weigh more: BM25's idf over the capped df
    SELECT lex.w, lex.q, ln(1 + (total.n - count(*) + 0.5) / (count(*) + 0.5)) AS idf
    FROM lex JOIN pair ON pair.w = lex.w, total
    GROUP BY lex.w, lex.q, total.n
), cand AS (  -- the AND matches when enough, else the best by weights found
    SELECT id FROM hit WHERE (SELECT count(*) FROM hit) >= $3
    UNION ALL
    (SELECT pair.id FROM pair JOIN weight ON weight.w = pair.w
     GROUP BY pair.id ORDER BY sum(weight.idf) DESC, pair.id LIMIT {rerank})
), scored AS (  -- weights of every matched term, then cover density
    SELECT c.id, d.document_id AS doc, d.chunk_index AS pos,
           coalesce((SELECT sum(w.idf) FROM weight w WHERE d.fts @@ w.q), 0) AS idf,
           ts_rank_cd(d.fts, coalesce(
               (SELECT string_agg(w.q::text, ' | ')::tsquery FROM weight w),
               tq.e || tq.s, tq.e, tq.s)) AS cd
    FROM cand c JOIN documents d ON d.id = c.id, tq
), txt AS (
    SELECT id, row_number() OVER (ORDER BY idf DESC, cd DESC, doc, pos) AS rank
    FROM scored
    ORDER BY idf DESC, cd DESC, doc, pos
    LIMIT $3
), fused AS (
    SELECT coalesce(vec.id, txt.id) AS id, vec.rank AS vrank, txt.rank AS trank,
           coalesce({wv} / ({rrf_k} + vec.rank), 0)
           + coalesce({wt} / ({rrf_k} + txt.rank), 0) AS score
    FROM vec FULL OUTER JOIN txt ON vec.id = txt.id
)
SELECT d.id, d.document_id, d.pipeline_id, m.title, m.url, d.content, d.metadata,
       f.score, f.vrank, f.trank
FROM fused f
JOIN documents d ON d.id = f.id
JOIN document_metadata m ON m.id = d.document_id
WHERE f.score > 0
ORDER BY f.score DESC, d.document_id, d.chunk_index  -- ties: in document order, not load order
LIMIT $4
"""  # nosec B608


class KnowledgeStore:
    """Async access to documents, chunks, tabular rows and pipeline state."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._dimension: int | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # ---------------------------------------------------------------- model

    async def embedding_model(self) -> tuple[str, int] | None:
        row = await self._pool.fetchrow("SELECT model_name, dimension FROM embedding_model")
        return None if row is None else (row["model_name"], row["dimension"])

    async def register_embedding_model(self, model_name: str, dimension: int) -> None:
        """Record the model on first use; refuse a different one afterwards.

        docs/architecture.md, invariant 5: one embedding space.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
            row = await conn.fetchrow("SELECT model_name, dimension FROM embedding_model")
            if row is not None:
                if (row["model_name"], row["dimension"]) != (model_name, dimension):
                    raise EmbeddingModelMismatch(
                        f"the knowledge store holds vectors from {row['model_name']!r} "
                        f"(dimension {row['dimension']}); refusing to mix in {model_name!r} "
                        f"(dimension {dimension}). Purge the store or configure the same model."
                    )
                self._dimension = dimension
                return
            await conn.execute(
                "INSERT INTO embedding_model (model_name, dimension) VALUES ($1, $2)",
                model_name,
                dimension,
            )
            # Existing vectors (if any) were written without a model row: drop them rather than
            # mixing spaces; documents keep their text and are re-embedded by the next sync.
            await conn.execute("UPDATE documents SET embedding = NULL")
            # The column type is DDL: a SECURITY DEFINER function of the migrator applies the
            # recorded dimension, so the ingestion role needs no DDL rights (migration 0003).
            await conn.execute("SELECT ragkeeper_admin.apply_embedding_dimension()")
        self._dimension = dimension

    async def ensure_vector_index(self) -> bool:
        """Build the HNSW cosine index if it is missing; True when this call built it.

        The index is not created with the model but after the first load (the sync engine
        calls this at the end of every run): pgvector builds a graph over rows already in
        the table several times faster than it inserts the same rows one by one into an
        existing graph (``bench/ingest.py``), and a first sync writes the whole corpus.
        Until it exists, search is an exact scan: correct, just slower on large stores.
        Serialised by the migration advisory lock, so concurrent first syncs build it once;
        built by ``ragkeeper_admin.create_vector_index()``, a SECURITY DEFINER function of the
        migrator (migration 0003), so the ingestion role needs no DDL rights.
        """
        name = "documents_embedding_hnsw"
        if await self._pool.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
            return False
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
            built: bool = await conn.fetchval("SELECT ragkeeper_admin.create_vector_index()")
        return built

    async def _vector_expr(self) -> str:
        if self._dimension is None:
            model = await self.embedding_model()
            self._dimension = model[1] if model else 0
        if self._dimension > MAX_VECTOR_INDEX_DIM:
            return f"(d.embedding::halfvec({self._dimension:d})) <=> ($1::vector)::halfvec"
        return "d.embedding <=> $1::vector"

    # ------------------------------------------------------------ pipeline

    async def get_state(self, pipeline_id: str) -> PipelineState | None:
        row = await self._pool.fetchrow(
            "SELECT pipeline_id, pipeline_type, cursor, last_check_time, last_success_time "
            "FROM rag_pipeline_state WHERE pipeline_id = $1",
            pipeline_id,
        )
        if row is None:
            return None
        return PipelineState(
            pipeline_id=row["pipeline_id"],
            pipeline_type=row["pipeline_type"],
            cursor=json.loads(row["cursor"]),
            last_check_time=row["last_check_time"],
            last_success_time=row["last_success_time"],
        )

    async def save_state(
        self,
        pipeline_id: str,
        pipeline_type: str,
        cursor: Mapping[str, Any],
        stats: Mapping[str, Any] | None = None,
        *,
        success: bool = True,
    ) -> None:
        """Advance the cursor. Call only after every change it covers is committed.

        docs/architecture.md, invariant 2: cursor last.
        """
        await self._pool.execute(
            """
            INSERT INTO rag_pipeline_state
                (pipeline_id, pipeline_type, cursor, last_check_time, last_success_time, last_stats)
            VALUES ($1, $2, $3::jsonb, now(), CASE WHEN $5 THEN now() END, $4::jsonb)
            ON CONFLICT (pipeline_id) DO UPDATE SET
                pipeline_type = EXCLUDED.pipeline_type,
                cursor = EXCLUDED.cursor,
                last_check_time = EXCLUDED.last_check_time,
                last_success_time = COALESCE(EXCLUDED.last_success_time,
                                             rag_pipeline_state.last_success_time),
                last_stats = EXCLUDED.last_stats,
                updated_at = now()
            """,
            pipeline_id,
            pipeline_type,
            json.dumps(dict(cursor)),
            None if stats is None else json.dumps(dict(stats)),
            success,
        )

    async def purge_pipeline(self, pipeline_id: str) -> int:
        """Delete every document (cascading to chunks and rows) and the state of one pipeline."""
        async with self._pool.acquire() as conn, conn.transaction():
            deleted = await conn.fetchval(
                "WITH d AS (DELETE FROM document_metadata WHERE pipeline_id = $1 RETURNING 1) "
                "SELECT count(*) FROM d",
                pipeline_id,
            )
            await conn.execute("DELETE FROM rag_pipeline_state WHERE pipeline_id = $1", pipeline_id)
        return int(deleted)

    # ------------------------------------------------------------- writing

    async def stored_versions(self, pipeline_id: str) -> dict[str, StoredVersion]:
        rows = await self._pool.fetch(
            "SELECT source_id, version, content_hash, path, url, metadata ->> 'file_title' AS ft "
            "FROM document_metadata WHERE pipeline_id = $1",
            pipeline_id,
        )
        return {
            r["source_id"]: StoredVersion(
                r["source_id"], r["version"], r["content_hash"], r["path"], r["url"], r["ft"]
            )
            for r in rows
        }

    async def existing_embeddings(self, hashes: Iterable[str]) -> dict[str, list[float]]:
        """Stored vectors for chunk hashes already embedded (by any document).

        docs/architecture.md, invariant 4: unchanged chunks are never re-embedded.
        """
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        rows = await self._pool.fetch(
            "SELECT DISTINCT ON (content_hash) content_hash, embedding FROM documents "
            "WHERE content_hash = ANY($1::text[]) AND embedding IS NOT NULL",
            wanted,
        )
        return {r["content_hash"]: r["embedding"].tolist() for r in rows}

    async def existing_captions(self, hashes: Iterable[str], model: str) -> dict[str, str]:
        """Stored captions of images by content hash, as ``model`` wrote them (any document's).

        Like ``existing_embeddings``: an image whose bytes were captioned before is never sent
        to the vision model again (docs/ocr.md, "Captions").
        """
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        rows = await self._pool.fetch(
            "SELECT content_hash, caption FROM image_captions "
            "WHERE content_hash = ANY($1::text[]) AND model = $2",
            wanted,
            model,
        )
        return {r["content_hash"]: r["caption"] for r in rows}

    async def save_caption(self, content_hash: str, model: str, caption: str) -> None:
        """Keep the caption ``model`` gave the image of ``content_hash`` (the first one wins)."""
        await self._pool.execute(
            "INSERT INTO image_captions (content_hash, model, caption) VALUES ($1, $2, $3) "
            "ON CONFLICT (content_hash, model) DO NOTHING",
            content_hash,
            model,
            caption,
        )

    async def replace_document(self, doc: DocumentWrite, *, fresh: bool = False) -> None:
        """Insert or replace one document with its chunks and rows in one transaction.

        ``fresh=True`` (the caller saw no stored version) skips deleting old chunks and
        rows; should a row exist after all, the unique (document, chunk) key makes the
        transaction fail rather than duplicate anything.
        """
        doc_id = doc.id
        async with self._pool.acquire() as conn, conn.transaction():
            await _upsert_metadata(conn, doc)
            if not fresh:
                await conn.execute("DELETE FROM documents WHERE document_id = $1", doc_id)
                await conn.execute("DELETE FROM document_rows WHERE dataset_id = $1", doc_id)
            if doc.chunks:
                await _copy_chunks(conn, doc)
            if doc.rows:
                await _copy_rows(conn, doc)

    async def update_version(
        self,
        pipeline_id: str,
        source_id: str,
        version: str,
        *,
        path: str | None = None,
        url: str | None = None,
        file_title: str | None = None,
    ) -> None:
        """Content unchanged but the file moved, was renamed or touched: update the location.

        The document title follows the new file name only if it came from the file name
        (a title found in the content stays).
        """
        await self._pool.execute(
            """
            UPDATE document_metadata SET
                version = $3,
                path = coalesce($4, path),
                url = coalesce($5, url),
                title = CASE WHEN $6::text IS NOT NULL AND title = metadata ->> 'file_title'
                             THEN $6 ELSE title END,
                metadata = CASE WHEN $6::text IS NULL THEN metadata
                                ELSE jsonb_set(metadata, '{file_title}', to_jsonb($6::text)) END,
                updated_at = now()
            WHERE pipeline_id = $1 AND source_id = $2
            """,
            pipeline_id,
            source_id,
            version,
            path,
            url,
            file_title,
        )

    async def delete_documents(self, pipeline_id: str, source_ids: Sequence[str]) -> int:
        """Delete documents of this pipeline only (chunks and rows cascade)."""
        if not source_ids:
            return 0
        count = await self._pool.fetchval(
            "WITH d AS (DELETE FROM document_metadata WHERE pipeline_id = $1 "
            "AND source_id = ANY($2::text[]) RETURNING 1) SELECT count(*) FROM d",
            pipeline_id,
            list(source_ids),
        )
        return int(count)

    # ------------------------------------------------------------- reading

    async def generation(self, pipeline_id: str | None = None) -> int:
        """How many committed transactions changed ``pipeline_id``'s documents (0: none yet);
        for ``None``, the sum over every pipeline (docs/architecture.md, invariant 8).

        Every committed change strictly increases it, so a cache keyed by the value read
        before a search never answers with a result from before a change committed earlier.
        """
        value = await self._pool.fetchval(
            "SELECT coalesce(sum(generation), 0) FROM pipeline_generations "
            "WHERE $1::text IS NULL OR pipeline_id = $1",
            pipeline_id,
        )
        return int(value)

    async def count_documents(self, pipeline_id: str | None = None) -> int:
        count = await self._pool.fetchval(
            "SELECT count(*) FROM document_metadata WHERE $1::text IS NULL OR pipeline_id = $1",
            pipeline_id,
        )
        return int(count)

    async def search_statement(
        self,
        query: str,
        query_embedding: Sequence[float],
        *,
        k: int = 5,
        pipeline_id: str | None = None,
        metadata_filter: Mapping[str, Any] | None = None,
        candidates: int = 40,
        weights: tuple[float, float] = (1.0, 1.0),
    ) -> tuple[str, list[Any]]:
        """The SQL and bind arguments ``search`` runs for these arguments.

        Filter clauses are present only when a pipeline or a non-empty metadata filter is
        given: a predicate that always matches still steers the planner away from the HNSW
        index (docs/architecture.md, invariant 6). ``weights`` (vector, text) scale each
        arm's reciprocal rank in the fusion; an arm weighted 0 adds nothing, so ``(1, 0)``
        is vector-only search and ``(0, 1)`` full-text only.
        """
        vector_weight, text_weight = (float(w) for w in weights)
        if not (vector_weight >= 0 and text_weight >= 0 and vector_weight + text_weight > 0):
            raise ValueError(f"search weights must be >= 0 and not both 0, got {weights}")
        k = max(1, min(k, 100))
        args: list[Any] = [list(query_embedding), query, max(candidates, k), k]
        filters = ""
        if pipeline_id is not None:
            args.append(pipeline_id)
            filters += f" AND d.pipeline_id = ${len(args)}"
        if metadata_filter:
            args.append(json.dumps(dict(metadata_filter)))
            filters += f" AND d.metadata @> ${len(args)}::jsonb"
        sql = _HYBRID_SQL.format(
            vec=await self._vector_expr(),
            filters=filters,
            cap=TEXT_MATCH_CAP,
            rerank=TEXT_RERANK,
            rrf_k=RRF_K,
            wv=repr(vector_weight),
            wt=repr(text_weight),
        )
        return sql, args

    async def search(
        self,
        query: str,
        query_embedding: Sequence[float],
        *,
        k: int = 5,
        pipeline_id: str | None = None,
        metadata_filter: Mapping[str, Any] | None = None,
        candidates: int = 40,
        weights: tuple[float, float] = (1.0, 1.0),
    ) -> list[SearchHit]:
        """Hybrid search: HNSW cosine + full text, fused by (weighted) reciprocal rank.

        ``metadata_filter`` matches chunk metadata by containment (``@>``), e.g.
        ``{"mime_type": "application/pdf"}``; ``weights`` as in :meth:`search_statement`.
        """
        sql, args = await self.search_statement(
            query,
            query_embedding,
            k=k,
            pipeline_id=pipeline_id,
            metadata_filter=metadata_filter,
            candidates=candidates,
            weights=weights,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(SEARCH_SETTINGS_SQL, str(max(EF_SEARCH, args[2])))
            rows = await conn.fetch(sql, *args)
        return [
            SearchHit(
                chunk_id=r["id"],
                document_id=r["document_id"],
                pipeline_id=r["pipeline_id"],
                title=r["title"],
                url=r["url"],
                content=r["content"],
                score=float(r["score"]),
                metadata=json.loads(r["metadata"]),
                vector_rank=r["vrank"],
                text_rank=r["trank"],
            )
            for r in rows
        ]

    _INFO_COLUMNS = """
        m.id, m.pipeline_id, m.title, m.url, m.path, m.mime_type, m.schema, m.updated_at,
        (SELECT count(*) FROM documents d WHERE d.document_id = m.id) AS chunk_count
    """

    @staticmethod
    def _info(r: asyncpg.Record) -> DocumentInfo:
        return DocumentInfo(
            id=r["id"],
            pipeline_id=r["pipeline_id"],
            title=r["title"],
            url=r["url"],
            path=r["path"],
            mime_type=r["mime_type"],
            schema=None if r["schema"] is None else json.loads(r["schema"]),
            chunk_count=int(r["chunk_count"]),
            updated_at=r["updated_at"],
        )

    async def list_documents(
        self, *, pipeline_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DocumentInfo]:
        rows = await self._pool.fetch(
            # Constant (B608 does not apply).
            f"SELECT {self._INFO_COLUMNS} FROM document_metadata m "  # nosec B608
            "WHERE $1::text IS NULL OR m.pipeline_id = $1 "
            "ORDER BY m.updated_at DESC, m.id LIMIT $2 OFFSET $3",
            pipeline_id,
            max(1, min(limit, 1000)),
            max(0, offset),
        )
        return [self._info(r) for r in rows]

    async def read_document(self, doc_id: str, *, max_chars: int = 20_000) -> DocumentText | None:
        """A whole document's text (chunks in order, overlaps included), bounded."""
        async with self._pool.acquire() as conn:
            info = await conn.fetchrow(
                f"SELECT {self._INFO_COLUMNS} FROM document_metadata m WHERE m.id = $1",  # nosec B608
                doc_id,
            )
            if info is None:
                return None
            parts = await conn.fetch(
                "SELECT content FROM documents WHERE document_id = $1 ORDER BY chunk_index", doc_id
            )
        text = "\n\n".join(p["content"] for p in parts)
        return DocumentText(
            info=self._info(info), content=text[:max_chars], truncated=len(text) > max_chars
        )

    async def document_rows(
        self, doc_id: str, *, sheet: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT row_data FROM document_rows WHERE dataset_id = $1 "
            "AND ($2::text IS NULL OR sheet = $2) ORDER BY sheet, row_number LIMIT $3 OFFSET $4",
            doc_id,
            sheet,
            max(1, min(limit, 10_000)),
            max(0, offset),
        )
        return [json.loads(r["row_data"]) for r in rows]


__all__ = ["KnowledgeStore", "document_id"]


# --- replace_document's statements, run inside its transaction -----------------------------

_UPSERT_METADATA_SQL = """
INSERT INTO document_metadata (id, pipeline_id, source_id, title, url, path,
    mime_type, version, content_hash, schema, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb)
ON CONFLICT (id) DO UPDATE SET
    title = EXCLUDED.title, url = EXCLUDED.url, path = EXCLUDED.path,
    mime_type = EXCLUDED.mime_type, version = EXCLUDED.version,
    content_hash = EXCLUDED.content_hash, schema = EXCLUDED.schema,
    metadata = EXCLUDED.metadata, updated_at = now()
"""
_CHUNK_COLUMNS = [
    "document_id",
    "pipeline_id",
    "chunk_index",
    "content",
    "content_hash",
    "metadata",
    "embedding",
]
_ROW_COLUMNS = ["dataset_id", "sheet", "row_number", "row_data"]


async def _upsert_metadata(conn: PoolConnectionProxy[Any], doc: DocumentWrite) -> None:
    """The ``document_metadata`` row: inserted, or updated in place (same id)."""
    schema = None if doc.schema is None else {k: list(v) for k, v in doc.schema.items()}
    await conn.execute(
        _UPSERT_METADATA_SQL,
        doc.id,
        doc.pipeline_id,
        doc.source_id,
        doc.title,
        doc.url,
        doc.path,
        doc.mime_type,
        doc.version,
        doc.content_hash,
        None if schema is None else json.dumps(schema),
        json.dumps(dict(doc.metadata)),
    )


async def _copy_chunks(conn: PoolConnectionProxy[Any], doc: DocumentWrite) -> None:
    """Every chunk of ``doc`` with its vector, numbered from 0, in one COPY."""
    doc_id = doc.id
    await conn.copy_records_to_table(
        "documents",
        columns=_CHUNK_COLUMNS,
        records=[
            (
                doc_id,
                doc.pipeline_id,
                i,
                c.content,
                c.content_hash,
                json.dumps(dict(c.metadata)),
                c.embedding,
            )
            for i, c in enumerate(doc.chunks)
        ],
    )


async def _copy_rows(conn: PoolConnectionProxy[Any], doc: DocumentWrite) -> None:
    """The tabular rows of ``doc`` (spreadsheets, CSV) in one COPY."""
    doc_id = doc.id
    await conn.copy_records_to_table(
        "document_rows",
        columns=_ROW_COLUMNS,
        records=[
            (doc_id, r.sheet, r.row_number, json.dumps(dict(r.data), default=str)) for r in doc.rows
        ],
    )
