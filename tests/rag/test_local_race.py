"""The local source against a tree that changes between the scan and the read.

Whoever can write to the watched folder can swap a listed file, after the scan and before the
read, for a link to a file outside the root, a FIFO or another file. Each test runs a real sync
into the embedded Postgres with the swap made right after the scan returns.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ragkeeper_knowledge import KnowledgeStore
from ragkeeper_knowledge.embedding import HashingEmbedder
from ragkeeper_knowledge.extraction import SUPPORTED_EXTENSIONS
from ragkeeper_rag.sources.base import ScanResult
from ragkeeper_rag.sources.local import LocalSource
from ragkeeper_rag.sync import ChunkingOptions, RunStats, SyncEngine

from .corpus import markdown_doc

SECRET = "credential-marker-7f3a9 do not index"
HARMLESS = "harmless words about the weather " * 20


class SwappedAfterScan(LocalSource):
    """The local folder, with ``swap`` run after the scan returns and before any read."""

    def __init__(
        self, root: Path, swap: Callable[[], None], *, max_file_bytes: int | None = None
    ) -> None:
        super().__init__(root, extensions=SUPPORTED_EXTENSIONS, max_file_bytes=max_file_bytes)
        self.swap = swap

    async def scan(self, cursor: Mapping[str, Any] | None) -> ScanResult:
        result = await super().scan(cursor)
        self.swap()
        return result


def engine(store: KnowledgeStore) -> SyncEngine:
    return SyncEngine(store, HashingEmbedder(dimension=64), chunking=ChunkingOptions(size=600))


async def indexed_text(store: KnowledgeStore, pipeline_id: str) -> str:
    rows = await store.pool.fetch(
        "SELECT content FROM documents WHERE pipeline_id=$1 ORDER BY document_id, chunk_index",
        pipeline_id,
    )
    return "\n".join(r["content"] for r in rows)


async def indexed_ids(store: KnowledgeStore, pipeline_id: str) -> set[str]:
    return {d.id for d in await store.list_documents(pipeline_id=pipeline_id)}


def tree(tmp_path: Path) -> tuple[Path, Path]:
    """``docs/`` with a good Markdown file and ``docs/a.txt``; ``outside/secret.txt`` beside it."""
    root = tmp_path / "docs"
    root.mkdir()
    (root / "good.md").write_text(markdown_doc(random.Random(4)))
    (root / "a.txt").write_text(HARMLESS)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "a.txt").write_text(SECRET)
    return root, outside


async def test_file_swapped_for_a_symlink_outside_is_refused(
    store: KnowledgeStore, tmp_path: Path
) -> None:
    root, outside = tree(tmp_path)

    def swap() -> None:
        (root / "a.txt").unlink()
        (root / "a.txt").symlink_to(outside / "secret.txt")

    stats = await engine(store).sync_once(SwappedAfterScan(root, swap), "race/link")
    assert stats.errors == [
        {"file": "a.txt", "error": "refused: a symlink is in its path (changed since the scan)"}
    ]
    assert stats.status == "partial"
    assert SECRET not in await indexed_text(store, "race/link")
    assert await indexed_ids(store, "race/link") == {"race/link:good.md"}


async def test_directory_swapped_for_a_symlink_outside_is_refused(
    store: KnowledgeStore, tmp_path: Path
) -> None:
    root, outside = tree(tmp_path)
    (root / "sub").mkdir()
    (root / "sub" / "a.txt").write_text(HARMLESS)

    def swap() -> None:
        (root / "sub").rename(tmp_path / "moved-away")
        (root / "sub").symlink_to(outside, target_is_directory=True)

    stats = await engine(store).sync_once(SwappedAfterScan(root, swap), "race/dir")
    assert stats.errors == [
        {"file": "sub/a.txt", "error": "refused: a symlink is in its path (changed since the scan)"}
    ]
    assert stats.status == "partial"
    assert SECRET not in await indexed_text(store, "race/dir")
    assert await indexed_ids(store, "race/dir") == {"race/dir:a.txt", "race/dir:good.md"}


async def sync_or_unblock(eng: SyncEngine, src: LocalSource, pipeline: str, fifo: Path) -> RunStats:
    """The sync's stats; a read stuck on ``fifo`` after 30 s is released and the test fails."""
    task = asyncio.create_task(eng.sync_once(src, pipeline))
    done, _ = await asyncio.wait({task}, timeout=30)
    if not done:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the reader sees end of file
        await asyncio.wait({task}, timeout=30)
        pytest.fail("the sync hung reading a FIFO")
    return task.result()


async def test_file_swapped_for_a_fifo_is_refused_without_hanging(
    store: KnowledgeStore, tmp_path: Path
) -> None:
    root, _ = tree(tmp_path)

    def swap() -> None:
        (root / "a.txt").unlink()
        os.mkfifo(root / "a.txt")

    src = SwappedAfterScan(root, swap)
    stats = await sync_or_unblock(engine(store), src, "race/fifo", root / "a.txt")
    assert stats.errors == [{"file": "a.txt", "error": "refused: no longer a regular file"}]
    assert stats.status == "partial"
    assert await indexed_ids(store, "race/fifo") == {"race/fifo:good.md"}


async def test_file_replaced_by_another_file_is_refused_then_read_by_the_next_run(
    store: KnowledgeStore, tmp_path: Path
) -> None:
    """A different inode is not the file the scan listed (its version token describes the old
    one): refused now, listed with its own version and read by the next run."""
    root, _ = tree(tmp_path)
    replacement = "replacement text written after the scan " * 10

    def swap() -> None:
        (root / "new.tmp").write_text(replacement)
        (root / "new.tmp").replace(root / "a.txt")

    eng = engine(store)
    stats = await eng.sync_once(SwappedAfterScan(root, swap), "race/inode")
    assert stats.errors == [
        {"file": "a.txt", "error": "refused: replaced by another file since the scan"}
    ]
    assert await indexed_ids(store, "race/inode") == {"race/inode:good.md"}

    again = await eng.sync_once(LocalSource(root, extensions=SUPPORTED_EXTENSIONS), "race/inode")
    assert again.status == "success", again.errors
    assert again.files_added == 1
    assert "replacement text" in await indexed_text(store, "race/inode")


async def test_file_growing_past_the_limit_during_the_read_is_refused(
    store: KnowledgeStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handle's size is checked first; a file that grows after that check is still read
    no further than the limit and refused."""
    root, _ = tree(tmp_path)
    real_fstat = os.fstat

    def fstat_then_grow(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        if st.st_size == len(HARMLESS):
            with (root / "a.txt").open("a") as grow:
                grow.write("x" * 50_000)
        return st

    monkeypatch.setattr(os, "fstat", fstat_then_grow)
    src = SwappedAfterScan(root, lambda: None, max_file_bytes=10_000)
    stats = await engine(store).sync_once(src, "race/grow")
    assert stats.errors == [{"file": "a.txt", "error": "larger than the 10000-byte limit"}]
    assert await indexed_ids(store, "race/grow") == {"race/grow:good.md"}


async def test_unchanged_tree_with_links_inside_the_root_still_syncs(
    store: KnowledgeStore, tmp_path: Path
) -> None:
    """Links that stay inside the root are read through their real path, which has no link."""
    root, _ = tree(tmp_path)
    (root / ".versions").mkdir()  # hidden, so listed only through the link
    (root / ".versions" / "b.md").write_text(markdown_doc(random.Random(8)))
    (root / "alias.txt").symlink_to(root / "a.txt")
    (root / "linked").symlink_to(root / ".versions", target_is_directory=True)

    stats = await engine(store).sync_once(SwappedAfterScan(root, lambda: None), "race/none")
    assert stats.status == "success", stats.errors
    assert await indexed_ids(store, "race/none") == {
        f"race/none:{name}" for name in ("a.txt", "alias.txt", "good.md", "linked/b.md")
    }
    assert "harmless words" in await indexed_text(store, "race/none")
