"""Extraction off the event loop: a small pool of worker processes, or one thread.

Extracting and chunking a file is CPU-bound Python for most formats. In a thread it
holds the GIL against the event loop that feeds Postgres and the embedder, so the two
take turns on one core (``bench/ingest.py`` measured the loop's socket writes waiting
for the GIL). Worker processes run it beside the loop on the other CPUs of the job.

Processes also contain a hostile file (a decompression bomb, a parser that loops or
crashes). Each worker runs under an address-space limit (``RLIMIT_AS``,
``RAG_WORKER_MEMORY_BYTES``), so a file that needs more memory fails with ``MemoryError``
in the worker instead of the kernel's OOM killer ending the whole job; the file is
reported and the worker replaced. A file that takes longer than
``RAG_FILE_TIMEOUT_SECONDS`` is reported and the pool's workers are killed and replaced
(a process pool cannot stop one task). At most ``workers`` files are in the pool at
once, so a file's clock runs only while a worker has it. When a pool breaks (a worker
killed: a timeout, a segfault in a native library, the OOM killer), every file then in
flight is retried once, alone in a fresh pool, so a file that breaks that pool too is
the culprit: it is reported and skipped. The run goes on either way.

A thread extracts only what cannot blow up: in a small run (or with one worker), small
plain-text files (``THREAD_EXTENSIONS`` up to ``THREAD_MAX_BYTES``) skip the pool's
start-up cost; PDF, DOCX, XLSX, images (OCR) and any larger file still go to a worker
process.

The ``forkserver`` start method is used: workers are forked from a clean
single-threaded server rather than from the job, whose event loop and connection
threads must not be copied into a child.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import multiprocessing
import os
import resource
import select
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ragkeeper_knowledge.extraction import (
    DEFAULT_LIMITS,
    Extracted,
    ExtractionLimits,
    LimitExceeded,
    extract,
)

from .chunking import ChunkPiece, chunk_document
from .errors import FileSkipped
from .logs import configure_logging

logger = logging.getLogger(__name__)

# Default ceiling of the automatic worker count: each worker holds the parsers of every
# format (tens of MiB) plus the file it works on, inside the job's memory limit.
AUTO_MAX_WORKERS = 2
# Below this many files to extract, a run uses a thread: starting the pool (a fork server
# importing every parser, ~1 s of CPU) costs more than parallel parsing saves on a few files
# (bench/ingest.py: the 20-file re-sync took 1.1 s with a pool against 0.15 s without).
POOL_MIN_FILES = 200
# Fresh workers after this many files per pool: a long-lived parser process's heap only grows
# (55-80 MiB RSS per worker at first, 115-125 MiB after ~3,000 files each; bench/memory.py), so the
# workers are replaced (forked again from the fork server, a few ms) before it adds up. Not
# ProcessPoolExecutor(max_tasks_per_child=...): on Python 3.11 to 3.13 before the fix of
# CPython issue 115634 a pool with a backlog stops replacing exited workers and hangs.
RECYCLE_FILES = 500
# What a thread may extract when the run uses threads: plain-text formats whose work is
# bounded by the file's own size. Everything else runs in a worker process, under its
# memory limit and timeout, even in a small run.
THREAD_EXTENSIONS = frozenset({"txt", "md", "markdown", "html", "htm", "csv", "tsv"})
THREAD_MAX_BYTES = 1024 * 1024
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 quota (a pod limit)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def resolve_workers(setting: int) -> int:
    """``RAG_EXTRACT_WORKERS``: 0 means one per available CPU, at most ``AUTO_MAX_WORKERS``."""
    return setting if setting > 0 else min(available_cpus(), AUTO_MAX_WORKERS)


def _exit_with(job: int) -> None:
    """Block until process ``job`` ends, then end this one.

    A worker holds both ends of its task pipe, so it never sees end-of-file when the job
    dies without shutting the pool down (SIGKILL outside a container's cgroup): without
    this watch it would wait forever.
    """
    try:
        fd = os.pidfd_open(job)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): poll instead
        while True:
            time.sleep(1.0)
            try:
                os.kill(job, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass  # the pid exists (someone else's): keep watching
    select.select([fd], [], [])  # a pidfd turns readable when its process exits
    os._exit(1)


def _init_worker(level: int, job: int, memory_bytes: int) -> None:
    """Log like the job (JSON lines on stderr), exit with it, stay under ``memory_bytes``."""
    configure_logging(logging.getLevelName(level))
    if memory_bytes > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    threading.Thread(target=_exit_with, args=(job,), name="job-watch", daemon=True).start()


def extract_and_chunk(
    data: bytes,
    extension: str,
    size: int,
    overlap: int,
    limits: ExtractionLimits = DEFAULT_LIMITS,
) -> tuple[Extracted, list[ChunkPiece]]:
    """One file's text, tables and chunks (what a worker process runs), within ``limits``."""
    extracted = extract(data, extension, limits)
    pieces = chunk_document(extracted.text, size=size, overlap=overlap)
    if len(pieces) > limits.max_chunks:
        raise LimitExceeded.of(
            f"{len(pieces)} chunks", "RAG_MAX_CHUNKS_PER_FILE", limits.max_chunks
        )
    return extracted, pieces


Result = tuple[Extracted, list[ChunkPiece]]


def _released_on_memory_error(work: Callable[..., Result], *args: object) -> Result:
    """Run ``work``; on ``MemoryError``, drop what it built before reporting it.

    The first ``MemoryError``'s traceback keeps every frame of the parser alive, with the
    memory it filled. Sending that back (the pool formats the traceback) needs memory the
    worker no longer has, and a worker that fails there hangs on its way out. Past the
    ``except`` block the traceback and its frames are gone, so a fresh, small error goes back.
    """
    try:
        return work(*args)
    except MemoryError:
        pass
    raise MemoryError("extraction ran out of memory")


class Extractor:
    """Runs :func:`extract_and_chunk` in worker processes, or small plain files in a thread.

    The pool starts with :meth:`start` or the first file that needs it (a run with no
    changes starts no process, a run with few starts one only for a file a thread may not
    take) and lives until :meth:`aclose`.
    """

    def __init__(
        self,
        workers: int,
        *,
        size: int,
        overlap: int,
        limits: ExtractionLimits = DEFAULT_LIMITS,
        pool_min_files: int = POOL_MIN_FILES,
        recycle_files: int = RECYCLE_FILES,
        work: Callable[[bytes, str, int, int, ExtractionLimits], Result] | None = None,
    ) -> None:
        """``work`` replaces :func:`extract_and_chunk` (a module-level function, so workers
        can import it): tests script the workers' behaviour with it."""
        self._work = work or extract_and_chunk
        self.workers = max(1, workers)
        self.threaded = self.workers == 1
        """Whether small plain files go to a thread (one worker, or a small run)."""
        self._pool_min_files = pool_min_files
        self._recycle_files = max(1, recycle_files)
        self._size = size
        self._overlap = overlap
        self._limits = limits
        self._slots = asyncio.Semaphore(self.workers)  # files in the pool at once
        self._alone = asyncio.Lock()  # a retry takes every slot
        self._pool: ProcessPoolExecutor | None = None
        self._warming: asyncio.Future[None] | None = None
        self._submitted = 0  # files given to the current pool
        self._retiring: asyncio.Future[None] | None = None
        self.pools_started = 0

    async def __call__(self, data: bytes, extension: str) -> Result:
        job = functools.partial(
            _released_on_memory_error,
            self._work,
            data,
            extension,
            self._size,
            self._overlap,
            self._limits,
        )
        ext = extension.lower().lstrip(".")
        if self.threaded and ext in THREAD_EXTENSIONS and len(data) <= THREAD_MAX_BYTES:
            return await asyncio.to_thread(job)
        try:
            return await self._in_worker(job, alone=False)
        except BrokenProcessPool:
            pass  # a worker died (maybe over another file): once more, alone in a fresh pool
        try:
            return await self._in_worker(job, alone=True)
        except BrokenProcessPool:
            raise FileSkipped(
                "extraction killed its worker process twice (a parser crash, or out of memory)"
            ) from None

    async def _in_worker(self, job: Callable[[], Result], *, alone: bool) -> Result:
        """Run ``job`` in the pool within the file timeout; the memory limit is the worker's."""
        limits = self._limits
        async with self._slot(alone):
            pool, future = await self._submit(job)
            try:
                return await asyncio.wait_for(
                    asyncio.wrap_future(future), limits.file_timeout_seconds
                )
            except TimeoutError:
                self._kill(pool)
                raise FileSkipped(
                    "refused: extraction took longer than "
                    f"RAG_FILE_TIMEOUT_SECONDS={limits.file_timeout_seconds:g}; worker replaced"
                ) from None
            except BrokenProcessPool:
                self._discard(pool)
                raise
            except MemoryError:
                if pool is self._pool:  # fresh workers for the next files
                    self._submitted = self._recycle_files
                raise FileSkipped(
                    "refused: extraction ran out of memory "
                    f"(over RAG_WORKER_MEMORY_BYTES={limits.worker_memory_bytes})"
                ) from None

    @contextlib.asynccontextmanager
    async def _slot(self, alone: bool) -> AsyncIterator[None]:
        """One of ``workers`` places in the pool; ``alone`` waits for and takes them all."""
        if not alone:
            async with self._slots:
                yield
            return
        taken = 0
        async with self._alone:
            try:
                while taken < self.workers:
                    await self._slots.acquire()
                    taken += 1
                yield
            finally:
                for _ in range(taken):
                    self._slots.release()

    async def _submit(
        self, job: Callable[[], Result]
    ) -> tuple[ProcessPoolExecutor, Future[Result]]:
        while True:
            pool = await self._pool_for_next_file()
            try:
                # submit() may start a worker (a fork request to the server that blocks until
                # it answers): do it on a thread so the event loop keeps writing meanwhile.
                return pool, await asyncio.to_thread(pool.submit, job)
            except BrokenProcessPool:  # (a RuntimeError too: caught first)
                self._discard(pool)
                raise
            except RuntimeError:  # "cannot schedule new futures after shutdown"
                if pool is self._pool:
                    raise
                # retired (recycled) since it was chosen: the next one takes it

    async def _pool_for_next_file(self) -> ProcessPoolExecutor:
        """The running pool, replaced by a fresh one every ``recycle_files`` files.

        The old workers finish the files they hold and exit before new ones start, so the
        job never runs more than ``workers`` of them; callers meanwhile wait (milliseconds).
        """
        if self._submitted >= self._recycle_files and self._pool is not None:
            old, self._pool = self._pool, None
            self._submitted = 0
            self._retiring = asyncio.ensure_future(asyncio.to_thread(old.shutdown, wait=True))
        if self._retiring is not None:
            retiring = self._retiring
            with contextlib.suppress(BrokenProcessPool):
                await asyncio.shield(retiring)
            if self._retiring is retiring:
                self._retiring = None
        self._submitted += 1
        return self._running_pool()

    def start(self, files: int) -> None:
        """Plan a run of ``files`` extractions: threads for a few, else boot the workers now.

        The workers start in the background, while the first files are fetched.
        """
        if files < self._pool_min_files:
            self.threaded = True
        if not self.threaded and self._warming is None:
            pool = self._running_pool()
            self._warming = asyncio.ensure_future(asyncio.to_thread(self._boot, pool))

    def _boot(self, pool: ProcessPoolExecutor) -> None:
        for _ in range(self.workers):  # each submit starts a worker until all are up
            pool.submit(int)

    def _running_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            # The server imports the parsers once; every worker is forked with them loaded
            # (instead of the default: importing the job's ``__main__`` and each worker
            # importing the parsers again).
            context.set_forkserver_preload([__name__])
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=context,
                initializer=_init_worker,
                initargs=(
                    logging.getLogger().getEffectiveLevel(),
                    os.getpid(),
                    self._limits.worker_memory_bytes,
                ),
            )
            self.pools_started += 1
        return self._pool

    def _kill(self, pool: ProcessPoolExecutor) -> None:
        """Kill the workers of ``pool``, one of which is stuck on a file; others are retried."""
        # A process pool cannot stop one task; its worker processes are its _processes.
        for process in list((pool._processes or {}).values()):
            with contextlib.suppress(OSError):
                process.kill()
        self._discard(pool, "an extraction worker timed out; starting a fresh pool")

    def _discard(
        self,
        pool: ProcessPoolExecutor,
        reason: str = "an extraction worker died; starting a fresh pool",
    ) -> None:
        """Forget a broken pool (once, however many files saw it break).

        Files still queued in it fail with ``BrokenProcessPool`` (and are retried), they
        are not cancelled.
        """
        if self._pool is pool:
            logger.warning(reason)
            self._pool = None
            pool.shutdown(wait=False)

    async def aclose(self) -> None:
        """Stop the workers; a file still being parsed is abandoned (it was not committed)."""
        if self._retiring is not None:
            with contextlib.suppress(Exception):
                await self._retiring
            self._retiring = None
        if self._warming is not None:
            with contextlib.suppress(Exception):
                await self._warming
            self._warming = None
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(BrokenProcessPool):
                await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
