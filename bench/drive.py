"""Google Drive sync benchmark: the changes API against full-listing approaches.

Run it::

    uv run --group bench python -m bench.drive                     # 5,000 files, 10 changed
    uv run --group bench python -m bench.drive --files 20000 --changed 50

It is not a test: it prints figures and ratios and asserts nothing about speed.
The real ``google-api-python-client`` talks HTTP to the Drive v3 fake of
``tests/rag/drive_fake.py`` on 127.0.0.1 (so wall times show client and
protocol overhead, not Google's latency; API calls are what quota and latency
scale with). The engine's part is played by a dict of stored versions: a file
is downloaded only when its version changed, as the sync engine does.

Approaches, each syncing the same tree in turn:

- **changes API**: ragkeeper's source with its saved cursor (``changes.list``);
- **full listing**: the same source without a cursor, so every run walks the
  whole tree (breadth-first, parents batched): what a job without a change
  feed must do to notice deletions;
- **naive**: the naive baseline: one ``files.list`` per folder, plus one
  ``files.get`` per known file to find deletions.

Scenarios: first sync (changes API only; the others start from its result),
no-change re-sync (median of ``--repeat``), and a re-sync after ``--changed``
files were edited.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from ragkeeper_rag.sources.drive_api import DriveHttpError  # noqa: E402
from ragkeeper_rag.sources.google_drive import GoogleDriveSource  # noqa: E402
from tests.rag.drive_fake import DriveFake, make_source  # noqa: E402

FOLDER = "application/vnd.google-apps.folder"


@dataclass
class Figure:
    approach: str
    scenario: str
    calls: int
    seconds: float
    downloads: int


class Store:
    """The engine's memory: source id -> version; downloads only what changed."""

    def __init__(self) -> None:
        self.versions: dict[str, str] = {}
        self.downloads = 0


async def changes_sync(source: GoogleDriveSource, store: Store, cursor: Any) -> Any:
    scan = await source.scan(cursor)
    todo = [f for f in scan.files if store.versions.get(f.source_id) != f.version]
    sem = asyncio.Semaphore(4)

    async def get(f: Any) -> None:
        async with sem:
            await source.fetch(f)

    await asyncio.gather(*(get(f) for f in todo))
    store.downloads += len(todo)
    if scan.full:
        store.versions = {f.source_id: f.version for f in scan.files}
    else:
        for sid in scan.deleted:
            store.versions.pop(sid, None)
        store.versions.update({f.source_id: f.version for f in scan.files})
    return scan.next_cursor


async def naive_sync(source: GoogleDriveSource, store: Store, root: str) -> None:
    """One listing per folder, then one files.get per known file to spot deletions."""
    api = source.api
    seen: dict[str, str] = {}
    folders = [root]
    while folders:
        folder = folders.pop()
        page = None
        while True:
            resp = await api.call(
                "files.list",
                q=f"'{folder}' in parents and trashed = false",
                pageSize=1000,
                pageToken=page,
                fields="nextPageToken,files(id,mimeType,md5Checksum,version)",
            )
            for item in resp.get("files", []):
                if item["mimeType"] == FOLDER:
                    folders.append(item["id"])
                else:
                    seen[item["id"]] = item.get("md5Checksum") or item["version"]
            page = resp.get("nextPageToken")
            if not page:
                break
    for file_id in list(store.versions):
        try:
            item = await api.call("files.get", fileId=file_id, fields="id,trashed")
            if item.get("trashed"):
                store.versions.pop(file_id)
        except DriveHttpError:
            store.versions.pop(file_id)
    todo = [i for i, v in seen.items() if store.versions.get(i) != v]
    for file_id in todo:
        await api.call("files.get_media", fileId=file_id)
    store.downloads += len(todo)
    store.versions.update(seen)


def build_tree(fake: DriveFake, files: int, top: int, per_top: int) -> tuple[str, list[str]]:
    root = fake.add_folder("Company", fake.root_id)
    folders = [root]
    for t in range(top):
        parent = fake.add_folder(f"Team {t}", root)
        folders.append(parent)
        folders.extend(fake.add_folder(f"Project {t}.{p}", parent) for p in range(per_top))
    ids = [
        fake.add_file(f"doc-{i:05d}.md", folders[i % len(folders)], f"# Doc {i}\nbody {i}\n")
        for i in range(files)
    ]
    return root, ids


async def measure(
    fake: DriveFake, approach: str, scenario: str, store: Store, run: Callable[[], Awaitable[None]]
) -> Figure:
    calls, downloads = fake.api_calls, store.downloads
    started = time.perf_counter()
    await run()
    seconds = time.perf_counter() - started
    return Figure(approach, scenario, fake.api_calls - calls, seconds, store.downloads - downloads)


async def bench(args: argparse.Namespace) -> list[Figure]:
    figures: list[Figure] = []
    with DriveFake() as fake:
        root, ids = build_tree(fake, args.files, args.top, args.per_top)
        changed_batches = iter(range(0, len(ids), args.changed))
        synced = Store()
        for approach in ("changes API", "full listing", "naive"):
            source = make_source(fake, root, drive_full_resync_hours=1e6)
            store = Store()
            state: dict[str, Any] = {"cursor": None}

            async def once(
                approach: str = approach,
                source: GoogleDriveSource = source,
                store: Store = store,
                state: dict[str, Any] = state,
            ) -> None:
                if approach == "naive":
                    await naive_sync(source, store, root)
                    return
                keep = state["cursor"] if approach == "changes API" else None
                state["cursor"] = await changes_sync(source, store, keep)

            if approach == "changes API":
                figures.append(await measure(fake, approach, "first sync", store, once))
                synced = store
            else:  # same starting point, without downloading everything again
                store.versions = dict(synced.versions)
                await once()
            repeats = [
                await measure(fake, approach, "no-change re-sync", store, once)
                for _ in range(args.repeat if approach != "naive" else 1)  # naive is slow
            ]
            median = statistics.median(f.seconds for f in repeats)
            figures.append(
                Figure(
                    approach, "no-change re-sync", repeats[0].calls, median, repeats[0].downloads
                )
            )
            start = next(changed_batches)
            for file_id in ids[start : start + args.changed]:
                fake.update(file_id, f"# Edited {file_id}\n")
            figures.append(
                await measure(fake, approach, f"{args.changed}-file change", store, once)
            )
            await source.aclose()
    return figures


def report(figures: list[Figure], args: argparse.Namespace) -> None:
    print(
        f"Drive fake on 127.0.0.1, {args.files} files in {1 + args.top * (1 + args.per_top)} "
        "folders (real google-api-python-client)"
    )
    print(f"{'scenario':<20} {'approach':<14} {'API calls':>10} {'seconds':>9} {'downloads':>10}")
    for f in figures:
        print(
            f"{f.scenario:<20} {f.approach:<14} {f.calls:>10} {f.seconds:>9.3f} {f.downloads:>10}"
        )
    print("\nratios (how many times the changes API's cost):")
    by_key = {(f.approach, f.scenario): f for f in figures}
    for scenario in ("no-change re-sync", f"{args.changed}-file change"):
        base = by_key[("changes API", scenario)]
        for other in ("full listing", "naive"):
            f = by_key[(other, scenario)]
            print(
                f"  {scenario:<20} {other:<13} calls x{f.calls / max(base.calls, 1):7.1f}"
                f"   wall x{f.seconds / max(base.seconds, 1e-9):7.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--top", type=int, default=10, help="top-level folders")
    parser.add_argument("--per-top", type=int, default=5, help="subfolders per top folder")
    parser.add_argument("--changed", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report(asyncio.run(bench(args)), args)


if __name__ == "__main__":
    main()
