"""The watched folder tree: a full listing, and the changes feed folded onto it.

**Full listing** walks the tree breadth-first, one ``files.list`` query for up
to :data:`PARENT_BATCH` folders at a time (``'a' in parents or 'b' in
parents``), following every ``nextPageToken``. Shortcuts are resolved: a
shortcut to a folder is walked as a subfolder, a shortcut to a file yields the
target (once, under the shortcut's path). The start page token is taken
*before* the walk, so anything that changes while walking is replayed next time.

**Incremental** reads ``changes.list`` from the saved token to the new start
token and decides each change against the folder map kept in the cursor:

- a file whose parent is a known folder (and not trashed) is added/updated;
- a trashed or removed file, or one whose parent is outside the map (moved out,
  or never inside: the engine ignores ids it does not hold), is deleted;
- a folder moved or renamed inside the tree, or moved into it, has its subtree
  re-listed (new paths, new files) — work proportional to that subtree;
- a known folder leaving the tree (moved out, trashed, removed) returns
  ``None``: the change feed does not list its descendants, so the caller falls
  back to a full listing, which is always correct.

The cursor stays O(folders), not O(files).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from ragkeeper_rag.errors import ConfigurationError, CredentialsError
from ragkeeper_rag.sources.base import SourceFile
from ragkeeper_rag.sources.drive_api import RATE_LIMIT_REASONS, DriveApi, DriveHttpError
from ragkeeper_rag.sources.drive_content import (
    FILE_FIELDS,
    FOLDER,
    SHORTCUT,
    is_document,
    join_path,
    to_source_file,
)

log = logging.getLogger(__name__)

PARENT_BATCH = 40
"""Folders per listing query; keeps the ``q`` string far below URL limits."""
PAGE_SIZE = 1000
_ALL_DRIVES = {"supportsAllDrives": True}
_LIST_FIELDS = f"nextPageToken,files({FILE_FIELDS})"
_CHANGE_FIELDS = (
    f"nextPageToken,newStartPageToken,changes(changeType,fileId,removed,file({FILE_FIELDS}))"
)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(slots=True)
class TreeState:
    """What the cursor remembers about the tree (besides the tokens)."""

    folders: dict[str, str] = field(default_factory=dict)
    """Folder id -> path inside the tree (root ``""``); shortcut-target folders included."""
    shortcuts: dict[str, str] = field(default_factory=dict)
    """Shortcut id -> target id, for shortcuts inside the tree."""
    targets: dict[str, str] = field(default_factory=dict)
    """Target file id -> path, for files reached through a file shortcut."""

    def parent_path(self, item: dict[str, Any]) -> str | None:
        for parent in item.get("parents") or ():
            if parent in self.folders:
                return self.folders[parent]
        return None


@dataclass(slots=True)
class TreeDelta:
    """Files to upsert and ids to delete, plus files the source saw but could not list."""

    files: dict[str, SourceFile] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class DriveTree:
    """Listing and change-feed logic over one watched folder."""

    def __init__(self, api: DriveApi, root_id: str, drive_id: str | None) -> None:
        self.api = api
        self.root_id = root_id
        self.drive_id = drive_id

    @classmethod
    async def open(cls, api: DriveApi, folder_id: str) -> DriveTree:
        """Check the watched folder exists, is a folder and is readable; resolve a shortcut."""
        item = await _get_root(api, folder_id)
        if item.get("mimeType") == SHORTCUT:
            details = item.get("shortcutDetails") or {}
            item = await _get_root(api, str(details.get("targetId", "")))
        if item.get("mimeType") != FOLDER:
            raise ConfigurationError(
                f"RAG_WATCH_FOLDER_ID={folder_id} is a {item.get('mimeType')}, not a folder"
            )
        if item.get("trashed"):
            raise ConfigurationError(f"RAG_WATCH_FOLDER_ID={folder_id}: the folder is in the trash")
        return cls(api, str(item["id"]), item.get("driveId"))

    async def start_page_token(self) -> str:
        extra = {"driveId": self.drive_id} if self.drive_id else {}
        resp = await self.api.call("changes.getStartPageToken", **_ALL_DRIVES, **extra)
        return str(resp["startPageToken"])

    async def full_listing(self) -> tuple[TreeDelta, TreeState]:
        state = TreeState()
        delta = TreeDelta()
        await self._walk({self.root_id: ""}, state, delta)
        return delta, state

    async def changes(self, token: str, state: TreeState) -> tuple[TreeDelta, str] | None:
        """Fold the change feed since ``token`` onto ``state`` (mutated in place).

        Returns the delta and the new start token, or ``None`` when only a full
        listing can be trusted (expired/invalid token, a folder left the tree).
        """
        changes: dict[str, dict[str, Any]] = {}
        extra = {"driveId": self.drive_id} if self.drive_id else {}
        page: str | None = token
        next_start = ""
        while page:
            try:
                resp = await self.api.call(
                    "changes.list",
                    pageToken=page,
                    pageSize=PAGE_SIZE,
                    includeRemoved=True,
                    includeItemsFromAllDrives=True,
                    spaces="drive",
                    fields=_CHANGE_FIELDS,
                    **_ALL_DRIVES,
                    **extra,
                )
            except DriveHttpError as exc:
                if exc.status in (400, 404, 410):
                    log.warning("drive page token rejected (HTTP %s): full listing", exc.status)
                    return None
                raise
            for change in resp.get("changes") or ():
                if change.get("changeType", "file") == "file" and change.get("fileId"):
                    changes.pop(change["fileId"], None)  # keep feed order of the latest state
                    changes[change["fileId"]] = change
            page = resp.get("nextPageToken")
            next_start = str(resp.get("newStartPageToken") or next_start)
        log.info("drive changes since last run: %s", len(changes))
        delta = TreeDelta()
        if not await self._fold(changes, state, delta):
            return None
        return delta, next_start or token

    async def _fold(
        self, changes: dict[str, dict[str, Any]], state: TreeState, delta: TreeDelta
    ) -> bool:
        """Apply changes to ``state``/``delta``; False when a full listing is needed."""
        target_folders = {t for t in state.shortcuts.values() if t in state.folders}
        try:
            pending = _fold_removed(changes, state, delta, target_folders)
            relist = self._place_folders(pending, state, target_folders)
            shortcut_targets = _fold_files(changes, state, delta, relist, target_folders)
        except _NeedsFullListing:
            return False
        if relist:
            log.info("drive folders added, moved or renamed: re-listing %s subtree(s)", len(relist))
            await self._walk(relist, state, delta, shortcut_targets)
        else:
            await self._resolve_shortcuts(shortcut_targets, state, delta)
        delta.deleted.difference_update(delta.files)
        return True

    def _place_folders(
        self, pending: dict[str, dict[str, Any]], state: TreeState, target_folders: set[str]
    ) -> dict[str, str]:
        """Give each changed folder its path; returns the ones to re-list (id -> new path).

        Settles to a fixpoint, since a new folder may arrive after its child. A known
        folder left without a place in the tree (moved out, trashed) needs a full listing.
        """
        relist: dict[str, str] = {}
        progress = True
        while progress:
            progress = False
            for file_id, item in list(pending.items()):
                if file_id == self.root_id or file_id in target_folders:
                    if item.get("trashed"):
                        raise _NeedsFullListing
                    del pending[file_id]
                    continue
                parent_path = None if item.get("trashed") else state.parent_path(item)
                if parent_path is None:
                    continue
                path = join_path(parent_path, str(item.get("name", file_id)))
                if state.folders.get(file_id) != path:
                    state.folders[file_id] = path
                    relist[file_id] = path
                del pending[file_id]
                progress = True
        if any(file_id in state.folders for file_id in pending):
            log.info("a watched folder left the tree: full listing")
            raise _NeedsFullListing
        return relist

    async def _walk(
        self,
        roots: dict[str, str],
        state: TreeState,
        delta: TreeDelta,
        shortcut_targets: list[tuple[str, str, str]] | None = None,
    ) -> None:
        """Breadth-first listing below ``roots`` (folder id -> path), batching parents."""
        shortcut_targets = list(shortcut_targets or ())
        state.folders.update(roots)
        seen = set(roots)
        frontier = list(roots.items())

        def enter(folder_id: str, path: str) -> None:
            seen.add(folder_id)
            state.folders[folder_id] = path
            frontier.append((folder_id, path))

        while frontier:
            batch, frontier = dict(frontier[:PARENT_BATCH]), frontier[PARENT_BATCH:]
            async for item in self._children(batch):
                parent_path = next(
                    (batch[p] for p in item.get("parents") or () if p in batch), None
                )
                if parent_path is None:
                    continue
                path = join_path(parent_path, str(item.get("name", item["id"])))
                mime = item.get("mimeType")
                if mime == FOLDER:
                    if item["id"] not in seen:
                        enter(item["id"], path)
                elif mime == SHORTCUT:
                    folder = _record_shortcut(item, path, state, shortcut_targets)
                    if folder is not None and folder not in seen and folder not in state.folders:
                        enter(folder, path)
                elif is_document(item):
                    delta.files[item["id"]] = to_source_file(item, path)
        await self._resolve_shortcuts(shortcut_targets, state, delta)

    async def _children(self, parents: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Every non-trashed child of ``parents``, across all pages."""
        clause = " or ".join(f"{_quote(p)} in parents" for p in parents)
        query = f"({clause}) and trashed = false"
        page: str | None = None
        while True:
            resp = await self.api.call(
                "files.list",
                q=query,
                pageSize=PAGE_SIZE,
                pageToken=page,
                fields=_LIST_FIELDS,
                corpora="allDrives",
                includeItemsFromAllDrives=True,
                **_ALL_DRIVES,
            )
            for item in resp.get("files") or ():
                yield item
            page = resp.get("nextPageToken")
            if not page:
                return

    async def _resolve_shortcuts(
        self, shortcuts: Iterable[tuple[str, str, str]], state: TreeState, delta: TreeDelta
    ) -> None:
        """Fetch each file shortcut's target once; it is listed under the shortcut's path."""
        for shortcut_id, target, path in shortcuts:
            if target in delta.files:
                continue
            try:
                item = await self.api.call(
                    "files.get",
                    fileId=target,
                    fields=FILE_FIELDS,
                    **_ALL_DRIVES,
                )
            except DriveHttpError as exc:
                if exc.status not in (403, 404):
                    raise
                delta.skipped.append((path, f"shortcut target not accessible (HTTP {exc.status})"))
                continue
            if item.get("trashed") or not is_document(item):
                continue
            state.targets[target] = path
            delta.files[target] = to_source_file(item, path, shortcut_id=shortcut_id)


class _NeedsFullListing(Exception):
    """The change feed cannot be folded onto the tree; only a full listing is correct."""


def _fold_removed(
    changes: dict[str, dict[str, Any]],
    state: TreeState,
    delta: TreeDelta,
    target_folders: set[str],
) -> dict[str, dict[str, Any]]:
    """Delete removed files and shortcuts; returns the changed folders, still to be placed.

    A removed folder of the tree (or the target folder of a removed shortcut) takes its
    descendants with it, which the feed does not list: that needs a full listing.
    """
    pending: dict[str, dict[str, Any]] = {}
    for file_id, change in changes.items():
        item = change.get("file") or {}
        if change.get("removed"):
            if file_id in state.folders:
                raise _NeedsFullListing
            target = state.shortcuts.pop(file_id, None)
            if target in target_folders:
                raise _NeedsFullListing
            if target is not None:
                state.targets.pop(target, None)
                delta.deleted.add(target)
            state.targets.pop(file_id, None)
            delta.deleted.add(file_id)
        elif item.get("mimeType") == FOLDER:
            pending[file_id] = item
    return pending


def _fold_files(
    changes: dict[str, dict[str, Any]],
    state: TreeState,
    delta: TreeDelta,
    relist: dict[str, str],
    target_folders: set[str],
) -> list[tuple[str, str, str]]:
    """Upsert or delete each changed file and shortcut, once the folders have their paths.

    Returns the file shortcuts whose targets still have to be fetched; a shortcut to a
    folder is added to ``relist``.
    """
    shortcut_targets: list[tuple[str, str, str]] = []
    for file_id, change in changes.items():
        item = change.get("file") or {}
        if change.get("removed") or item.get("mimeType") == FOLDER:
            continue
        parent_path = None if item.get("trashed") else state.parent_path(item)
        if item.get("mimeType") == SHORTCUT:
            if not _fold_shortcut(
                item, parent_path, state, relist, shortcut_targets, delta, target_folders
            ):
                raise _NeedsFullListing
        elif parent_path is not None and is_document(item):
            delta.files[file_id] = to_source_file(item, join_path(parent_path, item["name"]))
        elif file_id in state.targets and not item.get("trashed"):
            delta.files[file_id] = to_source_file(item, state.targets[file_id])
        else:
            state.targets.pop(file_id, None)
            delta.deleted.add(file_id)
    return shortcut_targets


def _fold_shortcut(
    item: dict[str, Any],
    parent_path: str | None,
    state: TreeState,
    relist: dict[str, str],
    shortcut_targets: list[tuple[str, str, str]],
    delta: TreeDelta,
    target_folders: set[str],
) -> bool:
    """A changed shortcut: recorded when inside the tree, else forgotten with its target.

    False when it pointed at a folder of the tree (its subtree is gone: full listing).
    """
    details = item.get("shortcutDetails") or {}
    if parent_path is not None and details.get("targetId"):
        path = join_path(parent_path, item["name"])
        folder = _record_shortcut(item, path, state, shortcut_targets)
        if folder is not None and folder not in state.folders:
            state.folders[folder] = relist[folder] = path
        return True
    old = state.shortcuts.pop(item["id"], None)
    if old in target_folders:
        return False
    if old is not None:
        state.targets.pop(old, None)
        delta.deleted.add(old)
    return True


def _record_shortcut(
    item: dict[str, Any], path: str, state: TreeState, shortcut_targets: list[tuple[str, str, str]]
) -> str | None:
    """Remember a shortcut found at ``path``; returns its target when that is a folder.

    A file target is queued in ``shortcut_targets`` (fetched by ``_resolve_shortcuts``);
    a shortcut without a target is ignored.
    """
    details = item.get("shortcutDetails") or {}
    target = details.get("targetId")
    if not target:
        return None
    state.shortcuts[item["id"]] = target
    if details.get("targetMimeType") == FOLDER:
        return str(target)
    shortcut_targets.append((item["id"], target, path))
    return None


async def _get_root(api: DriveApi, folder_id: str) -> dict[str, Any]:
    if not folder_id:
        raise ConfigurationError("RAG_WATCH_FOLDER_ID is empty")
    try:
        item: dict[str, Any] = await api.call(
            "files.get",
            fileId=folder_id,
            fields=FILE_FIELDS,
            **_ALL_DRIVES,
        )
    except DriveHttpError as exc:
        who = api.credentials.principal
        if exc.status == 404:
            raise ConfigurationError(
                f"RAG_WATCH_FOLDER_ID={folder_id}: folder not found or not shared with {who}"
            ) from None
        if exc.status == 403 and not exc.reasons & RATE_LIMIT_REASONS:
            raise CredentialsError(
                f"{who} may not read folder {folder_id} (HTTP 403 {', '.join(sorted(exc.reasons))})"
            ) from None
        raise
    return item
