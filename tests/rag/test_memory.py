"""The ingestion job fits its default memory limit: a bound on the whole process tree's RSS.

The operator gives every ingestion Job ``JOB_MEMORY_LIMIT`` = 1Gi by default. A container's
limit counts the job's main process, the fork server and every extraction worker together, so
the real job runs here as a subprocess with its defaults (the offline embedder, the default
number of extraction workers) while :class:`~tests.rag.rss.TreeSampler` adds up the RSS of the
whole tree ~20 times a second. The peak must stay under 60% of 1Gi, leaving head room for the
page cache, a larger file or a noisier neighbour. ``bench/memory.py`` measures the same figure
against corpus size (it does not grow with the number of files); docs/performance.md, "Memory".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ragkeeper_rag.workers import POOL_MIN_FILES, resolve_workers

from .corpus import write_mixed_corpus
from .rss import MIB, TreeSampler
from .test_cli import job_env

JOB_MEMORY_LIMIT = 1024 * MIB  # the operator's default (docs/operator.md)
BUDGET = int(0.6 * JOB_MEMORY_LIMIT)
# Enough files for the job to start its extraction workers (below POOL_MIN_FILES it extracts in
# a thread), with every format and a few hundred chunks of full length for the model.
FILES = POOL_MIN_FILES + 24


async def test_offline_job_tree_peak_rss_stays_under_60_percent_of_the_default_limit(
    database_url: str, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    write_mixed_corpus(docs, FILES)
    env = job_env(
        database_url,
        tmp_path,
        RAG_PIPELINE_ID="ns/memory",
        RAG_WATCH_DIRECTORY=str(docs),
        EMBEDDING_PROVIDER="offline",
        LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragkeeper_rag"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with TreeSampler(proc.pid, interval=0.05) as sampler:
        try:
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    peaks = sampler.peaks
    assert proc.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["files_added"] == FILES and stats["files_failed"] == 0
    assert stats["chunks_embedded"] > 300  # the model really ran, on many full-length chunks
    assert peaks.samples > 20
    if resolve_workers(0) > 1:  # main process + fork server + the workers were all counted
        assert peaks.processes >= 3
    assert peaks.rss < BUDGET, (
        f"the job's process tree peaked at {peaks.rss / MIB:.0f} MiB RSS "
        f"(main {peaks.main / MIB:.0f} MiB, others {peaks.children / MIB:.0f} MiB), "
        f"over 60% of the default 1Gi JOB_MEMORY_LIMIT ({BUDGET / MIB:.0f} MiB)"
    )
