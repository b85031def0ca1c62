"""Throughput of the offline default embedder, with the hashing embedder as baseline.

Run: ``uv run --group bench python -m bench.embedders [--chunks 1000] [--chars 800]``

Embeds ``--chunks`` realistic prose chunks of about ``--chars`` characters
(the ingestion job's default chunk size) through the public ``Embedder``
interface, as the sync engine does, and prints chunks per second for each
embedder and the ratio between them. It also measures how late a 10 ms timer on
the event loop fires while the offline model works, to show that inference
runs off the loop (``asyncio.to_thread``). Figures go to ``docs/embeddings.md``;
nothing here gates CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import time
from collections.abc import Awaitable, Callable

from ragkeeper_knowledge.embedding import Embedder, HashingEmbedder, OfflineEmbedder

SUBJECTS = (
    "The invoice",
    "Our deployment",
    "The quarterly report",
    "Each employee",
    "The database",
    "The support team",
    "This policy",
    "The customer",
    "The backup job",
    "The new contract",
    "The security review",
    "The onboarding guide",
    "The project budget",
    "The storage cluster",
)
VERBS = (
    "must be approved by",
    "is reviewed every month by",
    "was delayed because of",
    "depends on",
    "is stored next to",
    "should be reported to",
    "was rewritten after",
    "is summarised for",
    "needs a second signature from",
    "is replicated across",
)
OBJECTS = (
    "the finance department",
    "the platform engineers",
    "three regional offices",
    "the incident on Tuesday",
    "an external auditor",
    "the annual planning meeting",
    "every production database",
    "the legal team in Berlin",
    "the customers in the pilot",
    "a nightly maintenance window",
    "the new retention rules",
    "the board of directors",
)
TAILS = (
    "",
    " before the end of the quarter",
    " unless the request is marked urgent",
    " according to section 4.2",
    " as described in the previous chapter",
    " with a copy sent to the archive",
    " within 30 days of receipt",
)


def make_chunks(count: int, chars: int, seed: int = 20261126) -> list[str]:
    """Deterministic prose chunks cut at a sentence boundary near ``chars``."""
    rng = random.Random(seed)  # nosec B311 - benchmark data, not security
    chunks = []
    for _ in range(count):
        sentences: list[str] = []
        length = 0
        while length < chars:
            sentence = (
                f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
                f"{rng.choice(TAILS)}."
            )
            sentences.append(sentence)
            length += len(sentence) + 1
        chunks.append(" ".join(sentences)[: chars + 80])
    return chunks


async def loop_lag_while(work: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(seconds the work took, worst lateness of a 10 ms timer meanwhile)."""
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - start - 0.01)

    tick = asyncio.create_task(ticker())
    start = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - start
    done.set()
    await tick
    return elapsed, worst


async def measure(embedder: Embedder, chunks: list[str], batch: int) -> tuple[float, float]:
    """Chunks per second over ``chunks`` (after one warm-up call) and worst loop lag."""
    await embedder.embed(chunks[:2])  # load the model outside the timing

    async def work() -> None:
        for start in range(0, len(chunks), batch):
            await embedder.embed(chunks[start : start + batch])

    elapsed, lag = await loop_lag_while(work)
    return len(chunks) / elapsed, lag


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--chars", type=int, default=800)
    parser.add_argument("--batch", type=int, default=64, help="texts per embed() call")
    args = parser.parse_args()

    chunks = make_chunks(args.chunks, args.chars)
    mean_len = sum(map(len, chunks)) / len(chunks)
    print(
        f"{len(chunks)} chunks, mean {mean_len:.0f} chars; python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs ({platform.machine()})"
    )

    hashing = HashingEmbedder()
    offline = OfflineEmbedder()
    try:
        hashing_rate, _ = await measure(hashing, chunks, args.batch)
        offline_rate, lag = await measure(offline, chunks, args.batch)
    finally:
        await offline.aclose()

    print(f"hashing-v1 (baseline):          {hashing_rate:9.1f} chunks/s")
    print(f"{offline.model_name}: {offline_rate:9.1f} chunks/s")
    print(f"offline / hashing ratio:         {offline_rate / hashing_rate:9.4f}")
    print(f"worst event-loop lag while the offline model ran: {lag * 1000:.1f} ms")
    print(
        f"time to embed 10,000 chunks offline: {10_000 / offline_rate / 60:.1f} min "
        "(only new chunks are embedded on later runs)"
    )


if __name__ == "__main__":
    asyncio.run(main())
