"""Extraction in worker processes: same rows as in a thread, a killed worker loses nothing."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil
import pytest

from ragkeeper_knowledge import KnowledgeStore
from ragkeeper_knowledge.extraction import SUPPORTED_EXTENSIONS, ExtractionLimits
from ragkeeper_rag.errors import FileSkipped
from ragkeeper_rag.sources.base import FetchedContent, SourceFile
from ragkeeper_rag.sources.local import LocalSource
from ragkeeper_rag.sync import ChunkingOptions, SyncEngine
from ragkeeper_rag.workers import (
    AUTO_MAX_WORKERS,
    THREAD_MAX_BYTES,
    Extractor,
    available_cpus,
    resolve_workers,
)

from .bombs import scripted_work
from .corpus import docx_bytes, write_mixed_corpus
from .test_sync_local import CountingEmbedder, snapshot, source


def engine(store: KnowledgeStore, workers: int) -> SyncEngine:
    return SyncEngine(
        store,
        CountingEmbedder(),
        chunking=ChunkingOptions(size=600, overlap=80),
        extract_workers=workers,
        pool_min_files=0,  # a pool even for these small corpora
    )


def extraction_workers() -> list[psutil.Process]:
    """Live worker processes of this test process's pools (children of their fork server)."""
    workers = []
    for p in psutil.Process().children(recursive=True):
        try:  # a worker that exited meanwhile (or awaits reaping) is not a live one
            forked = "forkserver" in " ".join(p.cmdline()) and p.ppid() != os.getpid()
        except psutil.Error:
            continue
        if forked:
            workers.append(p)
    return workers


def rows_without_owner(rows: dict[str, object], pipeline_id: str) -> str:
    return repr(rows).replace(pipeline_id, "<pipeline>")


class KillWorkersSource(LocalSource):
    """A local folder that SIGKILLs every extraction worker while fetching one file."""

    def __init__(self, root: Path, victim: str) -> None:
        super().__init__(root, extensions=SUPPORTED_EXTENSIONS)
        self.victim = victim
        self.killed: list[int] = []

    async def fetch(self, file: SourceFile) -> FetchedContent:
        if file.path == self.victim:
            for worker in extraction_workers():
                worker.kill()
                self.killed.append(worker.pid)
        return await super().fetch(file)


async def test_workers_write_the_rows_a_thread_writes(
    store: KnowledgeStore, tmp_path: Path
) -> None:
    write_mixed_corpus(tmp_path / "docs", 21)
    in_thread = await engine(store, 1).sync_once(source(tmp_path / "docs"), "w/thread")
    in_workers = await engine(store, 2).sync_once(source(tmp_path / "docs"), "w/procs")
    assert in_workers.files_failed == in_thread.files_failed == 0
    assert in_workers.files_added == in_thread.files_added == 21
    assert rows_without_owner(await snapshot(store, "w/procs"), "w/procs") == rows_without_owner(
        await snapshot(store, "w/thread"), "w/thread"
    )
    assert extraction_workers() == []  # the pool is shut down with the run


async def test_a_killed_worker_costs_a_retry_not_a_file(
    store: KnowledgeStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The OOM killer (or a parser crash) takes a worker: files in flight are retried."""
    files = write_mixed_corpus(tmp_path / "docs", 40)
    victim = sorted(p.relative_to(tmp_path / "docs").as_posix() for p in files)[20]
    killer = KillWorkersSource(tmp_path / "docs", victim)
    with caplog.at_level(logging.WARNING, logger="ragkeeper_rag.workers"):
        stats = await engine(store, 2).sync_once(killer, "w/killed")
    assert killer.killed, "no worker was running when the victim file was fetched"
    assert "an extraction worker died" in caplog.text
    assert (stats.status, stats.files_failed, stats.files_added) == ("success", 0, 40)
    reference = await engine(store, 1).sync_once(source(tmp_path / "docs"), "w/reference")
    assert reference.files_added == 40
    assert rows_without_owner(await snapshot(store, "w/killed"), "w/killed") == rows_without_owner(
        await snapshot(store, "w/reference"), "w/reference"
    )


async def test_a_file_that_kills_a_fresh_worker_too_is_skipped() -> None:
    """Two broken pools in a row: the file is reported (FileSkipped), the run can go on."""

    class DyingWorkers(Extractor):
        pools = 0

        def _running_pool(self) -> ProcessPoolExecutor:
            if self._pool is None:  # workers that die as they start, like a crashing parser
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("forkserver"),
                    initializer=os._exit,
                    initargs=(1,),
                )
                self.pools += 1
            return self._pool

    extractor = DyingWorkers(2, size=600, overlap=80, pool_min_files=0)
    with pytest.raises(FileSkipped, match="killed its worker process twice"):
        await extractor(b"# Title\n\ntext", ".md")
    assert extractor.pools == 2
    await extractor.aclose()


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", None), ("100000 100000\n", 1), ("150000 100000\n", 2), ("garbage", None)],
)
def test_available_cpus_honours_the_cgroup_quota(
    tmp_path: Path, cpu_max: str, expected: int | None
) -> None:
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text(cpu_max)
    got = available_cpus(tmp_path / "cpu.max")
    assert got == (affinity if expected is None else min(affinity, expected))
    assert available_cpus(tmp_path / "missing") == affinity


async def test_a_few_files_are_extracted_in_a_thread() -> None:
    """A small re-sync does not pay for starting a pool; a big one boots it up front."""
    few = Extractor(2, size=600, overlap=80, pool_min_files=8)
    few.start(7)
    extracted, pieces = await few(b"# Title\n\nsome text", ".md")
    assert few.threaded and extraction_workers() == [] and few.pools_started == 0
    assert extracted.title == "Title" and pieces
    await few.aclose()

    many = Extractor(2, size=600, overlap=80, pool_min_files=8)
    many.start(8)
    try:
        extracted, _ = await many(b"# Other\n\ntext", ".md")
        assert many.workers == 2 and len(extraction_workers()) == 2
        assert extracted.title == "Other"
    finally:
        await many.aclose()
    assert extraction_workers() == []


def test_resolve_workers() -> None:
    assert resolve_workers(3) == 3
    assert resolve_workers(0) == min(available_cpus(), AUTO_MAX_WORKERS)


async def test_workers_are_replaced_every_few_files() -> None:
    """A worker's heap only grows: fresh workers every ``recycle_files`` files, none lost."""
    extractor = Extractor(2, size=600, overlap=80, pool_min_files=0, recycle_files=3)
    extractor.start(10)
    seen: set[int] = set()
    running = asyncio.Semaphore(2)  # a few files at a time, like the engine's fetch_concurrency

    async def one(i: int) -> str | None:
        async with running:
            extracted, _ = await extractor(f"# Doc {i}\n\ntext {i}".encode(), ".md")
        seen.update(w.pid for w in extraction_workers())
        assert len(extraction_workers()) <= 2  # the old workers are gone before new ones start
        return extracted.title

    try:
        titles = await asyncio.gather(*(one(i) for i in range(10)))
        assert titles == [f"Doc {i}" for i in range(10)]
        assert extractor.pools_started >= 3 and len(seen) > 2
    finally:
        await extractor.aclose()
    assert extraction_workers() == []


@pytest.mark.parametrize("workers", [1, 2])
async def test_files_that_can_expand_go_to_a_worker_even_in_a_thread_run(workers: int) -> None:
    """PDF, DOCX, XLSX and any large file are extracted under the worker's bounds."""
    extractor = Extractor(workers, size=600, overlap=80, pool_min_files=8)
    extractor.start(3)
    try:
        await extractor(b"# Small\n\ntext", ".md")
        assert extractor.pools_started == 0
        big = b"# Big\n\n" + b"word " * (THREAD_MAX_BYTES // 5)
        extracted, _ = await extractor(big, ".md")
        assert extracted.title == "Big" and extractor.pools_started == 1
        assert len(extraction_workers()) == 1  # started for the file; the others start on demand
        extracted, _ = await extractor(docx_bytes("Risky", ["one paragraph"]), ".docx")
        assert extracted.title == "Risky" and extractor.pools_started == 1
    finally:
        await extractor.aclose()
    assert extraction_workers() == []


async def test_a_file_over_the_worker_memory_limit_is_reported_and_the_pool_renewed() -> None:
    """RLIMIT_AS turns a runaway allocation into MemoryError: that file's error, not the job's.

    The workers have extracted a file first: a worker that had, and then sent the parser's
    own MemoryError back, hung on its way out until the timeout (here 60 s, not 300).
    """
    limits = ExtractionLimits(
        max_rows=10_000_000, worker_memory_bytes=384 * 1024 * 1024, file_timeout_seconds=60
    )
    extractor = Extractor(2, size=600, overlap=80, limits=limits, pool_min_files=0)
    rows = b"a,b\n" + b"1,2\n" * 3_000_000  # ~1.4 GB as Python rows
    try:
        await extractor(b"# Warm\n\nup", ".md")
        with pytest.raises(FileSkipped, match=r"out of memory \(over RAG_WORKER_MEMORY_BYTES="):
            await extractor(rows, ".csv")
        extracted, _ = await extractor(b"# Fine\n\nafter", ".md")
        assert extracted.title == "Fine"
        assert extractor.pools_started == 2  # the worker that hit the limit was replaced
    finally:
        await extractor.aclose()


async def test_a_file_over_the_timeout_is_reported_and_its_neighbour_retried(
    tmp_path: Path,
) -> None:
    """The stuck worker is killed; the file in the pool's other worker is retried, not lost.

    Scripted workers (``scripted_work``) make the order certain whatever the load: the stuck
    file and its neighbour are both running when the timeout kills the pool, and the
    neighbour's own deadline comes a second after the stuck file's.
    """
    limits = ExtractionLimits(file_timeout_seconds=4.0)
    extractor = Extractor(
        2, size=600, overlap=80, limits=limits, pool_min_files=0, work=scripted_work
    )
    stuck, neighbour = tmp_path / "stuck", tmp_path / "neighbour"

    async def after(marker: Path, delay: float, data: bytes) -> str:
        while not marker.exists():
            await asyncio.sleep(0.02)
        await asyncio.sleep(delay)
        return (await extractor(data, ".pdf"))[0].text

    try:
        await asyncio.gather(extractor(b"quick", ".pdf"), extractor(b"quick", ".pdf"))
        assert extractor.pools_started == 1  # both workers up before the clock matters
        slow, text = await asyncio.gather(
            extractor(f"stuck:{stuck}".encode(), ".pdf"),
            after(stuck, 1.0, f"once:{neighbour}".encode()),
            return_exceptions=True,
        )
        assert isinstance(slow, FileSkipped), slow
        assert str(slow) == (
            "refused: extraction took longer than RAG_FILE_TIMEOUT_SECONDS=4; worker replaced"
        )
        assert text == "retried", text  # it was in flight at the kill, then ran again
        assert extractor.pools_started == 2  # the killed one, and the fresh one of the retry
    finally:
        await extractor.aclose()
