"""The sync engine: one pass from a source's changes to the knowledge store.

    scan(cursor) -> compare versions -> fetch -> content hash -> extract -> chunk
      -> embed only chunk hashes the store has never seen -> replace document
         (one transaction each) -> delete what went away -> save cursor

Why in this order:

* **Upserts before deletions.** A renamed file is a new path plus a deleted
  one; writing the new document first lets its chunks find their vectors by
  hash (docs/architecture.md, invariant 4: unchanged chunks are never
  re-embedded) before the old document and its vectors are removed.
* **Cursor last** (docs/architecture.md, invariant 2). The cursor is saved
  only after every change of the scan is committed; a crash or SIGTERM leaves
  the old cursor, and the next run redoes at most the uncommitted documents —
  idempotently, since each document is replaced whole in one transaction
  (docs/architecture.md, invariant 1: one transaction per document).
* **Vector index after the first load.** The HNSW index is built at the end of
  a run when it is missing (the first sync into a new store), over the rows just
  written: several times cheaper than inserting them into a growing graph.
* **Extraction in worker processes** (``workers.py``) when the job has more
  than one CPU and a run has many files to parse, so parsing runs beside the
  event loop instead of taking turns with it for the GIL, and a parser crash
  costs one file, not the run.
* **Captions in the event loop** (``captions.py``, ``RAG_IMAGE_CAPTIONS``): an
  image's caption is a request to a vision model, asked after the image was
  extracted, once per image content (cached by hash like chunk vectors).
* **Groups of files.** Fetch/extract run concurrently for a group, then all
  new chunk texts of the group go to the embedder in one call, which keeps
  batch sizes high for both local models and HTTP APIs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg

from ragkeeper_knowledge import ChunkWrite, DocumentWrite, KnowledgeStore, RowWrite, StoredVersion
from ragkeeper_knowledge.embedding import Embedder, ensure_dimension
from ragkeeper_knowledge.errors import FileSkipped
from ragkeeper_knowledge.extraction import (
    DEFAULT_LIMITS,
    IMAGE_EXTENSIONS,
    Extracted,
    ExtractionLimits,
)

from .captions import Captioner, CaptionFailed, CaptionRefused, Captions
from .chunking import ChunkPiece, chunk_document
from .errors import Interrupted, TransientError
from .sources.base import ScanResult, Source, SourceFile
from .workers import POOL_MIN_FILES, Extractor

logger = logging.getLogger(__name__)

Status = Literal["success", "partial", "failed"]


@dataclass
class RunStats:
    """The job's result; serialised as the last stdout line and the termination log."""

    pipeline_id: str
    pipeline_type: str
    run_mode: str
    status: Status = "success"
    files_seen: int = 0
    files_added: int = 0
    files_updated: int = 0
    files_deleted: int = 0
    files_unchanged: int = 0
    files_failed: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    documents_total: int | None = None
    full_scan: bool | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    duration: float = 0.0

    def add_error(self, file: str, error: str) -> None:
        self.files_failed += 1
        self.errors.append({"file": file, "error": error})

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if v is not None}
        data["duration"] = round(self.duration, 3)
        return data


@dataclass(frozen=True, slots=True)
class ChunkingOptions:
    size: int = 1200
    overlap: int = 150


@dataclass
class _Prepared:
    file: SourceFile
    content_hash: str
    extracted: Extracted
    pieces: list[tuple[str, str, dict[str, Any]]]  # (text, sha256, metadata)


def _log_progress(
    pipeline_id: str, checked: int, total: int
) -> Callable[[asyncio.Task[None]], None]:
    """A done-callback that logs progress once a group's documents are committed."""

    def done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is None:
            logger.info(
                "progress %s: %d/%d files checked and committed", pipeline_id, checked, total
            )

    return done


def _embedding_input(title: str | None, heading: str | None, text: str) -> str:
    """What is embedded for a chunk: its text under its document title and heading path.

    Only the title found *in the content* is used (not the file name), so renaming a
    file leaves every chunk's input — and so its hash and vector — unchanged.
    """
    context = " > ".join(part for part in (title, heading) if part)
    return f"{context}\n\n{text}" if context else text


OCR_MARK = "+ocr"
"""In the stored version of a PDF or image read with OCR on (``SyncEngine._with_marks``)."""
OCR_MIME_PREFIXES = ("application/pdf", "image/")
CAPTION_MARK = "+caption"
"""Ends the stored version of an image stored with its caption (``SyncEngine._with_marks``)."""
CAPTION_HEADING = "Image caption"
"""The heading of an image's caption chunks (what the embedder and the reranker read with them)."""


def _reading(version: str) -> tuple[bool, bool]:
    """(OCR on, captioned) as a stored version records them."""
    captioned = version.endswith(CAPTION_MARK)
    return version.removesuffix(CAPTION_MARK).endswith(OCR_MARK), captioned


def _same_reading(known: StoredVersion, f: SourceFile, digest: str) -> bool:
    """Whether the stored document is ``f``'s content read as it would be now (OCR on or off,
    captioned or not)."""
    return known.content_hash == digest and _reading(known.version) == _reading(f.version)


def _chunks(
    f: SourceFile, extracted: Extracted, pieces: list[ChunkPiece]
) -> list[tuple[str, str, dict[str, Any]]]:
    """(text, hash of the embedding input, metadata) of each piece of one file.

    A piece of a PDF cites the page it starts on (``page``); a piece of text recognised in
    pixels (an image, a scanned page) says so (``ocr``).
    """
    title = extracted.title or f.title
    chunks = []
    for p in pieces:
        meta: dict[str, Any] = {
            "title": title,
            "source": f.path,
            "url": f.url,
            "position": p.index,
            "heading": p.heading,
            "char_start": p.char_start,
            "mime_type": f.mime_type,
        }
        page = extracted.page_at(p.char_start)
        if page is not None and page.number is not None:
            meta["page"] = page.number
        if page is not None and page.ocr:
            meta["ocr"] = True
        chunks.append((p.text, sha256(_embedding_input(extracted.title, p.heading, p.text)), meta))
    return chunks


def _caption_chunks(
    f: SourceFile, extracted: Extracted, caption: str, first: int, chunking: ChunkingOptions
) -> list[tuple[str, str, dict[str, Any]]]:
    """The chunks of an image's caption, after its OCR chunks (``first`` is the next position).

    Their metadata says ``caption: true``; ``char_start`` is the offset in the caption.
    """
    title = extracted.title or f.title
    chunks = []
    for p in chunk_document(caption, size=chunking.size, overlap=chunking.overlap):
        meta: dict[str, Any] = {
            "title": title,
            "source": f.path,
            "url": f.url,
            "position": first + p.index,
            "heading": CAPTION_HEADING,
            "char_start": p.char_start,
            "mime_type": f.mime_type,
            "caption": True,
        }
        digest = sha256(_embedding_input(extracted.title, CAPTION_HEADING, p.text))
        chunks.append((p.text, digest, meta))
    return chunks


def _wants_caption(f: SourceFile, extension: str) -> bool:
    """Whether ``f`` is an image this run captions (its version carries the mark)."""
    return f.version.endswith(CAPTION_MARK) and extension.lower().lstrip(".") in IMAGE_EXTENSIONS


async def _settle(task: asyncio.Task[Any] | None) -> None:
    """Cancel a pipeline stage that is no longer wanted and wait for it to unwind."""
    if task is None:
        return
    if not task.done():
        task.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await task  # also retrieves an exception nobody else will read


def _gone(scan: ScanResult, stored: dict[str, StoredVersion]) -> list[str]:
    """Stored documents the scan says went away: every unlisted one after a full scan."""
    listed = {f.source_id for f in scan.files}
    if scan.full:
        return [sid for sid in stored if sid not in listed]
    return [sid for sid in scan.deleted if sid in stored and sid not in listed]


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


class SyncEngine:
    """Runs one sync of one source into the store; holds no per-run state itself."""

    def __init__(
        self,
        store: KnowledgeStore,
        embedder: Embedder,
        *,
        chunking: ChunkingOptions | None = None,
        fetch_concurrency: int = 4,
        write_concurrency: int = 3,
        group_size: int = 32,
        extract_workers: int = 1,
        pool_min_files: int = POOL_MIN_FILES,
        limits: ExtractionLimits = DEFAULT_LIMITS,
        captioner: Captioner | None = None,
    ) -> None:
        """``captioner`` (``RAG_IMAGE_CAPTIONS``) captions images; the engine does not close it."""
        self.store = store
        self.embedder = embedder
        self.chunking = chunking or ChunkingOptions()
        self.fetch_concurrency = max(1, fetch_concurrency)
        self.write_concurrency = max(1, write_concurrency)
        self.group_size = max(1, group_size)
        self.extract_workers = max(1, extract_workers)
        self.pool_min_files = pool_min_files
        self.limits = limits
        self.captioner = captioner

    async def ensure_model(self) -> None:
        """Record the embedding model or fail fast on a mismatch.

        docs/architecture.md, invariant 5: one embedding space.
        """
        dimension = await ensure_dimension(self.embedder)
        await self.store.register_embedding_model(self.embedder.model_name, dimension)

    async def sync_once(
        self, source: Source, pipeline_id: str, *, stop: asyncio.Event | None = None
    ) -> RunStats:
        stats = RunStats(pipeline_id, source.pipeline_type, "single")
        started = time.monotonic()
        extractor = Extractor(
            self.extract_workers,
            size=self.chunking.size,
            overlap=self.chunking.overlap,
            limits=self.limits,
            pool_min_files=self.pool_min_files,
        )
        captions = Captions(self.store, self.captioner) if self.captioner else None
        try:
            await self._sync(
                source, pipeline_id, stats, stop or asyncio.Event(), extractor, captions
            )
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            raise TransientError(f"database connection lost: {type(exc).__name__}: {exc}") from exc
        finally:
            if captions is not None:
                await captions.aclose()
            await extractor.aclose()
            stats.duration = time.monotonic() - started
        if stats.files_failed:
            stats.status = "partial"
        return stats

    async def _sync(
        self,
        source: Source,
        pipeline_id: str,
        stats: RunStats,
        stop: asyncio.Event,
        extractor: Extractor,
        captions: Captions | None,
    ) -> None:
        await self.ensure_model()
        state = await self.store.get_state(pipeline_id)
        scan = await source.scan(state.cursor if state else None)
        stored = await self.store.stored_versions(pipeline_id)
        todo = await self._to_check(pipeline_id, scan, stored, stats)
        await self._process(source, pipeline_id, todo, stored, stats, stop, extractor, captions)
        if stop.is_set():
            raise Interrupted("stop requested; the cursor was not advanced")
        await self._finish(source, pipeline_id, scan, stored, stats)

    def _with_marks(self, f: SourceFile) -> SourceFile:
        """``f`` with the version stored for it: a PDF's or image's says whether OCR was on,
        an image's whether it is captioned.

        Turning OCR (or captions) on or off so reads every stored PDF and image (or image)
        again once: a scan stored without OCR gets its text, an image its caption; unchanged
        text reuses its vectors. An image whose caption failed is stored without the caption
        mark, so the next run tries again.
        """
        version = f.version
        if self.limits.ocr_enabled and f.mime_type.startswith(OCR_MIME_PREFIXES):
            version += OCR_MARK
        if self.captioner is not None and f.mime_type.startswith("image/"):
            version += CAPTION_MARK
        return f if version == f.version else dataclasses.replace(f, version=version)

    async def _to_check(
        self,
        pipeline_id: str,
        scan: ScanResult,
        stored: dict[str, StoredVersion],
        stats: RunStats,
    ) -> list[SourceFile]:
        """The scanned files whose version changed; the others are counted unchanged.

        A file with the same version but another path, URL or title (renamed or moved
        without a content change; Drive keeps the file id) has only those updated.
        """
        stats.full_scan = scan.full
        for path, reason in scan.skipped:
            stats.add_error(path, reason)
        stats.files_seen = len(scan.files)
        todo: list[SourceFile] = []
        for scanned in scan.files:
            f = self._with_marks(scanned)
            known = stored.get(f.source_id)
            if known is None or known.version != f.version:
                todo.append(f)
                continue
            stats.files_unchanged += 1
            if (known.path, known.url, known.file_title) != (f.path, f.url, f.title):
                await self.store.update_version(
                    pipeline_id, f.source_id, f.version, path=f.path, url=f.url, file_title=f.title
                )
        logger.info(
            "scan of %s: %d files, %d to check, full=%s",
            pipeline_id,
            len(scan.files),
            len(todo),
            scan.full,
        )
        return todo

    async def _process(
        self,
        source: Source,
        pipeline_id: str,
        todo: list[SourceFile],
        stored: dict[str, StoredVersion],
        stats: RunStats,
        stop: asyncio.Event,
        extractor: Extractor,
        captions: Captions | None,
    ) -> None:
        """Prepare, embed and write ``todo`` in groups; returns early once ``stop`` is set.

        Pipeline, three groups deep: while group N is embedded, group N+1 is fetched and
        extracted and group N-1's documents are written (one transaction each).
        """
        groups = [todo[i : i + self.group_size] for i in range(0, len(todo), self.group_size)]
        extractor.start(len(todo))

        def read(group: list[SourceFile]) -> asyncio.Task[list[_Prepared]]:
            return asyncio.create_task(
                self._prepare_group(source, pipeline_id, group, stored, stats, extractor, captions)
            )

        reader = read(groups[0]) if groups else None
        writer: asyncio.Task[None] | None = None
        inflight: dict[str, list[float]] = {}  # vectors of the group being written
        try:
            for index in range(len(groups)):
                if stop.is_set() or reader is None:
                    break
                prepared = await reader
                reader = read(groups[index + 1]) if index + 1 < len(groups) else None
                vectors = await self._vectors(prepared, inflight, stats)
                if writer is not None:
                    await writer
                checked = min((index + 1) * self.group_size, len(todo))
                writer = asyncio.create_task(
                    self._write_group(pipeline_id, prepared, vectors, stored, stats)
                )
                writer.add_done_callback(_log_progress(pipeline_id, checked, len(todo)))
                inflight = vectors
            if writer is not None:
                await writer  # let committed work finish even when stopping
        finally:
            await _settle(reader)
            await _settle(writer)

    async def _finish(
        self,
        source: Source,
        pipeline_id: str,
        scan: ScanResult,
        stored: dict[str, StoredVersion],
        stats: RunStats,
    ) -> None:
        """Delete what went away, build the vector index if missing, then save the cursor."""
        stats.files_deleted = await self.store.delete_documents(pipeline_id, _gone(scan, stored))
        index_started = time.monotonic()
        if await self.store.ensure_vector_index():
            # First load (or the index was dropped): built over the rows just written.
            logger.info("built the vector index in %.1fs", time.monotonic() - index_started)
        stats.documents_total = await self.store.count_documents(pipeline_id)
        await self.store.save_state(
            pipeline_id, source.pipeline_type, scan.next_cursor, stats.as_dict()
        )

    async def _prepare_group(
        self,
        source: Source,
        pipeline_id: str,
        files: Sequence[SourceFile],
        stored: dict[str, StoredVersion],
        stats: RunStats,
        extractor: Extractor,
        captions: Captions | None,
    ) -> list[_Prepared]:
        """Fetch, hash, extract, chunk (and caption) a group of files concurrently (bounded)."""
        sem = asyncio.Semaphore(self.fetch_concurrency)

        async def prepare(f: SourceFile) -> _Prepared | None:
            async with sem:
                read = await read_one(f)
            if read is None:
                return None
            prepared, data, extension = read
            if captions is not None and _wants_caption(f, extension):
                # Outside the fetch slots: a caption takes seconds, other files need not wait.
                await self._add_caption(prepared, data, captions, stats)
            return prepared

        async def read_one(f: SourceFile) -> tuple[_Prepared, bytes, str] | None:
            """The file fetched, extracted and chunked (with its bytes and extension), or
            None when it is unchanged or failed."""
            try:
                content = await source.fetch(f)
            except FileSkipped as exc:
                stats.add_error(f.path, str(exc))
                return None
            digest = sha256(content.data)
            known = stored.get(f.source_id)
            if known is not None and _same_reading(known, f, digest):
                await self.store.update_version(
                    pipeline_id,
                    f.source_id,
                    f.version,
                    path=f.path,
                    url=f.url,
                    file_title=f.title,
                )
                stats.files_unchanged += 1
                return None
            try:
                extracted, pieces = await extractor(content.data, content.extension)
            except FileSkipped as exc:
                stats.add_error(f.path, str(exc))
                return None
            prepared = _Prepared(f, digest, extracted, _chunks(f, extracted, pieces))
            return prepared, content.data, content.extension

        return [p for p in await asyncio.gather(*(prepare(f) for f in files)) if p]

    async def _add_caption(
        self, p: _Prepared, data: bytes, captions: Captions, stats: RunStats
    ) -> None:
        """The image's caption as its last chunks; on failure, reported and the mark dropped.

        Without the caption mark in its stored version, an image indexed with its OCR text
        alone is read again (and its caption asked again) by the next run. An image that is
        never sent (too large) keeps the mark: reported once, not again until it changes.
        """
        f = p.file
        try:
            caption = await captions(p.content_hash, data)
        except CaptionRefused as exc:  # keeps the mark: not asked again until the image changes
            stats.add_error(f.path, str(exc))
        except CaptionFailed as exc:
            stats.add_error(f.path, str(exc))
            p.file = dataclasses.replace(f, version=f.version.removesuffix(CAPTION_MARK))
        else:
            p.pieces += _caption_chunks(f, p.extracted, caption, len(p.pieces), self.chunking)

    async def _vectors(
        self, prepared: list[_Prepared], inflight: dict[str, list[float]], stats: RunStats
    ) -> dict[str, list[float]]:
        """Vectors for every chunk of the group; only never-seen chunk inputs are embedded.

        ``inflight`` holds the vectors of the group still being written, which the store
        cannot return yet.
        """
        hashes = {h for p in prepared for _, h, _ in p.pieces}
        vectors = {h: inflight[h] for h in hashes if h in inflight}
        vectors.update(await self.store.existing_embeddings(hashes - vectors.keys()))
        missing: dict[str, str] = {}
        for p in prepared:
            for text, h, meta in p.pieces:
                if h not in vectors:
                    missing.setdefault(
                        h, _embedding_input(p.extracted.title, meta["heading"], text)
                    )
        if missing:
            new = await self.embedder.embed(list(missing.values()))
            vectors.update(zip(missing.keys(), new, strict=True))
        stats.chunks_embedded += len(missing)
        stats.chunks_reused += sum(len(p.pieces) for p in prepared) - len(missing)
        return vectors

    async def _write_group(
        self,
        pipeline_id: str,
        prepared: list[_Prepared],
        vectors: dict[str, list[float]],
        stored: dict[str, StoredVersion],
        stats: RunStats,
    ) -> None:
        """Replace each document in its own transaction, a few at a time."""
        sem = asyncio.Semaphore(self.write_concurrency)

        async def write(p: _Prepared) -> None:
            fresh = p.file.source_id not in stored
            async with sem:
                await self.store.replace_document(
                    self._document(pipeline_id, p, vectors), fresh=fresh
                )
            if fresh:
                stats.files_added += 1
            else:
                stats.files_updated += 1

        results = await asyncio.gather(*(write(p) for p in prepared), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    @staticmethod
    def _document(pipeline_id: str, p: _Prepared, vectors: dict[str, list[float]]) -> DocumentWrite:
        f = p.file
        rows: list[RowWrite] = []
        schema: dict[str, list[str]] | None = None
        if p.extracted.tables:
            schema = {t.sheet: list(t.columns) for t in p.extracted.tables}
            rows = [
                RowWrite(t.sheet, i + 1, row)
                for t in p.extracted.tables
                for i, row in enumerate(t.rows)
            ]
        return DocumentWrite(
            pipeline_id=pipeline_id,
            source_id=f.source_id,
            title=p.extracted.title or f.title,
            version=f.version,
            content_hash=p.content_hash,
            url=f.url,
            path=f.path,
            mime_type=f.mime_type,
            metadata={**f.metadata, "size": f.size, "file_title": f.title},
            chunks=[ChunkWrite(text, h, vectors[h], meta) for text, h, meta in p.pieces],
            schema=schema,
            rows=rows,
        )


async def purge(store: KnowledgeStore, pipeline_id: str, pipeline_type: str) -> RunStats:
    """Delete this pipeline's documents and state (``RUN_MODE=purge``); needs no embedder."""
    stats = RunStats(pipeline_id, pipeline_type, "purge")
    started = time.monotonic()
    stats.files_deleted = await store.purge_pipeline(pipeline_id)
    stats.documents_total = 0
    stats.duration = time.monotonic() - started
    return stats
