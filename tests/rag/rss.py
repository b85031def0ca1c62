"""Peak memory of a process tree, sampled the way a container's memory limit would see it.

A Kubernetes memory limit applies to the whole container: the ingestion job's main process,
the ``forkserver`` process and every extraction worker forked from it. :class:`TreeSampler`
polls a process and all its descendants (``psutil``, ~20 Hz by default) in a background
thread and keeps the peaks of:

* ``rss``: the sum of the processes' resident set sizes at one instant. Pages the workers
  share copy-on-write with the fork server are counted once per process, so this is an upper
  bound of what the cgroup charges — the figure the tests and ``bench/memory.py`` hold to
  their limits;
* ``pss``: the sum of proportional set sizes (shared pages split between the processes that
  map them), closer to the cgroup's own count; sampled only with ``pss=True`` (it reads
  ``/proc/<pid>/smaps_rollup``, which is slower);
* ``main``: the root process alone, and ``children``: the sum of its descendants.

Used by ``tests/rag/test_memory.py`` and ``bench/memory.py``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType

import psutil  # type: ignore[import-untyped]

MIB = 1024 * 1024


@dataclass
class Peaks:
    """Largest values seen, in bytes (one sample's sum, not a sum of per-process peaks)."""

    rss: int = 0
    pss: int = 0
    main: int = 0
    children: int = 0
    processes: int = 0
    samples: int = 0

    def mib(self, field: str) -> float:
        return float(getattr(self, field)) / MIB


class TreeSampler:
    """Samples the memory of ``pid`` and its descendants until :meth:`stop` (or the block ends).

    Use as a context manager around the lifetime of the process::

        proc = subprocess.Popen(...)
        with TreeSampler(proc.pid) as sampler:
            proc.wait()
        sampler.peaks.rss
    """

    def __init__(self, pid: int, *, interval: float = 0.05, pss: bool = False) -> None:
        self.pid = pid
        self.interval = interval
        self.pss = pss
        self.peaks = Peaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> Peaks:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.peaks

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:  # the root exited
                return
            self._sample(root, tree)
            self._stop.wait(self.interval)

    def _sample(self, root: psutil.Process, tree: list[psutil.Process]) -> None:
        rss = pss = main = 0
        alive = 0
        for proc in tree:
            try:
                if self.pss:
                    info = proc.memory_full_info()
                    pss += info.pss
                else:
                    info = proc.memory_info()
            except psutil.Error:  # exited between listing and reading
                continue
            alive += 1
            rss += info.rss
            if proc.pid == root.pid:
                main = info.rss
        peaks = self.peaks
        peaks.samples += 1
        peaks.rss = max(peaks.rss, rss)
        peaks.pss = max(peaks.pss, pss)
        peaks.main = max(peaks.main, main)
        peaks.children = max(peaks.children, rss - main)
        peaks.processes = max(peaks.processes, alive)
