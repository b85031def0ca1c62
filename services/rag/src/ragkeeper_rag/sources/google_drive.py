"""Google Drive as a source of the ingestion job: what changed, and the bytes of a file.

The job runs as a Kubernetes CronJob, so each run must be cheap when little
changed and correct whatever happened in between:

- the first run (and any run whose cursor is missing, for another folder, or
  whose page token Drive no longer accepts) lists the whole tree and returns a
  *full* scan, so the engine deletes whatever is no longer there;
- later runs read only the Drive changes feed from the saved start page token:
  API calls grow with the number of changes, not with the number of files;
- every ``RAG_DRIVE_FULL_RESYNC_HOURS`` a full listing reconciles anything the
  feed could not express;
- the cursor (token, folder map, time of the last full listing) is handed to
  the engine, which persists it only after every change of the scan is
  committed (docs/architecture.md, invariant 2: cursor last), so an
  interrupted run is simply replayed.

Modules: ``drive_auth`` (credentials), ``drive_api`` (threads, retries, error
types), ``drive_tree`` (listing and change feed), ``drive_content`` (formats).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ragkeeper_rag.errors import ConfigurationError, FileSkipped
from ragkeeper_rag.settings import RagSettings
from ragkeeper_rag.sources.base import FetchedContent, ScanResult, SourceFile
from ragkeeper_rag.sources.drive_api import (
    RATE_LIMIT_REASONS,
    DriveApi,
    DriveHttpError,
    RetryPolicy,
)
from ragkeeper_rag.sources.drive_auth import load_credentials
from ragkeeper_rag.sources.drive_content import EXPORTS, download_extension
from ragkeeper_rag.sources.drive_tree import DriveTree, TreeDelta, TreeState

log = logging.getLogger(__name__)

CURSOR_VERSION = 1


@dataclass(frozen=True, slots=True)
class DriveCursor:
    """The JSON kept in ``rag_pipeline_state`` between runs."""

    folder_id: str
    root_id: str
    drive_id: str | None
    page_token: str
    full_listing_at: datetime
    state: TreeState

    def to_json(self) -> dict[str, Any]:
        return {
            "v": CURSOR_VERSION,
            "folder_id": self.folder_id,
            "root_id": self.root_id,
            "drive_id": self.drive_id,
            "page_token": self.page_token,
            "full_listing_at": self.full_listing_at.isoformat(),
            "folders": self.state.folders,
            "shortcuts": self.state.shortcuts,
            "targets": self.state.targets,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> DriveCursor | None:
        """Parse a saved cursor; ``None`` (full listing) when absent or unreadable."""
        if not data or data.get("v") != CURSOR_VERSION:
            return None
        try:
            return cls(
                folder_id=str(data["folder_id"]),
                root_id=str(data["root_id"]),
                drive_id=data.get("drive_id"),
                page_token=str(data["page_token"]),
                full_listing_at=datetime.fromisoformat(str(data["full_listing_at"])),
                state=TreeState(
                    folders=dict(data["folders"]),
                    shortcuts=dict(data.get("shortcuts") or {}),
                    targets=dict(data.get("targets") or {}),
                ),
            )
        except (KeyError, TypeError, ValueError):
            log.warning("drive cursor unreadable: full listing")
            return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class GoogleDriveSource:
    """A Drive folder tree (My Drive or shared drive) as a :class:`Source`."""

    pipeline_type = "google_drive"

    def __init__(
        self,
        api: DriveApi,
        folder_id: str,
        *,
        full_resync_hours: float = 24.0,
        max_file_bytes: int = 100 * 1024 * 1024,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.api = api
        self.folder_id = folder_id
        self.full_resync = timedelta(hours=full_resync_hours)
        self.max_file_bytes = max_file_bytes
        self._clock = clock

    @classmethod
    def from_settings(
        cls, settings: RagSettings, *, retry: RetryPolicy | None = None
    ) -> GoogleDriveSource:
        """Build from the job's settings; fails fast on a missing folder or bad credentials."""
        if not settings.folder_id:
            raise ConfigurationError(
                "the google_drive pipeline needs RAG_WATCH_FOLDER_ID (--folder-id)"
            )
        api = DriveApi(
            load_credentials(settings),
            endpoint=settings.google_drive_api_endpoint,
            max_workers=settings.drive_max_concurrency,
            retry=retry,
        )
        return cls(
            api,
            settings.folder_id,
            full_resync_hours=settings.drive_full_resync_hours,
            max_file_bytes=settings.max_file_bytes,
        )

    async def scan(self, cursor: Mapping[str, Any] | None) -> ScanResult:
        tree = await DriveTree.open(self.api, self.folder_id)
        saved = DriveCursor.from_json(cursor)
        reason = self._full_listing_reason(saved, tree)
        if saved is not None and reason is None:
            outcome = await tree.changes(saved.page_token, saved.state)
            if outcome is not None:
                delta, token = outcome
                next_cursor = DriveCursor(
                    self.folder_id,
                    tree.root_id,
                    tree.drive_id,
                    token,
                    saved.full_listing_at,
                    saved.state,
                )
                return self._result(delta, next_cursor, full=False)
            reason = "page token expired or a watched folder left the tree"
        log.info("drive full listing of %s: %s", self.folder_id, reason)
        token = await tree.start_page_token()
        listed_at = self._clock()
        delta, state = await tree.full_listing()
        next_cursor = DriveCursor(
            self.folder_id, tree.root_id, tree.drive_id, token, listed_at, state
        )
        return self._result(delta, next_cursor, full=True)

    def _full_listing_reason(self, saved: DriveCursor | None, tree: DriveTree) -> str | None:
        if saved is None:
            return "no saved cursor"
        if saved.folder_id != self.folder_id or saved.root_id != tree.root_id:
            return "watched folder changed"
        if self._clock() - saved.full_listing_at >= self.full_resync:
            return "periodic reconciliation"
        return None

    def _result(self, delta: TreeDelta, cursor: DriveCursor, *, full: bool) -> ScanResult:
        log.info(
            "drive scan (%s): %s file(s), %s deletion(s), api calls %s",
            "full" if full else "changes",
            len(delta.files),
            len(delta.deleted),
            dict(self.api.calls),
        )
        return ScanResult(
            files=list(delta.files.values()),
            deleted=sorted(delta.deleted),
            full=full,
            next_cursor=cursor.to_json(),
            skipped=delta.skipped,
        )

    async def fetch(self, file: SourceFile) -> FetchedContent:
        exports = EXPORTS.get(file.mime_type)
        if exports:
            for index, export in enumerate(exports):
                try:
                    data = await self.api.call(
                        "files.export",
                        fileId=file.source_id,
                        mimeType=export.mime_type,
                    )
                except DriveHttpError as exc:
                    refused = exc.status in (400, 403) and not exc.reasons & RATE_LIMIT_REASONS
                    if (
                        refused
                        and index + 1 < len(exports)
                        and "exportSizeLimitExceeded" not in exc.reasons
                    ):
                        log.info(
                            "export of %s as %s refused, trying %s",
                            file.source_id,
                            export.mime_type,
                            exports[index + 1].mime_type,
                        )
                        continue
                    raise FileSkipped(_skip_reason(exc)) from exc
                return FetchedContent(bytes(data), export.mime_type, export.extension)
        extension = download_extension({"name": file.title, "mimeType": file.mime_type})
        if extension is None:
            raise FileSkipped(f"unsupported file type {file.mime_type}")
        if file.size is not None and file.size > self.max_file_bytes:
            raise FileSkipped(f"{file.size} bytes exceeds RAG_MAX_FILE_BYTES={self.max_file_bytes}")
        try:
            data = await self.api.call(
                "files.get_media",
                fileId=file.source_id,
                supportsAllDrives=True,
            )
        except DriveHttpError as exc:
            raise FileSkipped(_skip_reason(exc)) from exc
        return FetchedContent(bytes(data), file.mime_type, extension)

    async def aclose(self) -> None:
        await self.api.aclose()


def _skip_reason(exc: DriveHttpError) -> str:
    if "exportSizeLimitExceeded" in exc.reasons:
        return "too large for Drive export (10 MB limit)"
    if exc.status == 404:
        return "no longer in Drive (HTTP 404); the next scan removes it"
    reasons = f" ({', '.join(sorted(exc.reasons))})" if exc.reasons else ""
    return f"Drive {exc.kind} failed: HTTP {exc.status}{reasons}"
