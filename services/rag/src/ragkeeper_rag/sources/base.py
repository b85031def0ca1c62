"""What the sync engine needs from a source (local folder, Google Drive).

A source answers two questions: *what changed since this cursor?* (``scan``)
and *what are the bytes of this file?* (``fetch``). The engine owns everything
else: comparing versions with the store, hashing content, extraction, chunking,
embedding, one transaction per document, and saving the cursor only after the
changes it covers are committed (docs/architecture.md, invariant 2: cursor
last).

A scan is either **full** (``ScanResult.full``: the listing is complete, so any
stored document of this pipeline not in ``files`` is deleted) or **incremental**
(only ``files`` changed and ``deleted`` ids went away).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file as the source sees it, before any download."""

    source_id: str
    """Stable key inside the pipeline: relative path (local) or Drive file id."""
    path: str
    """Human-readable location: relative path, or folder path inside Drive."""
    title: str
    mime_type: str
    version: str
    """Cheap change token compared before downloading: ``size:mtime_ns`` locally,
    ``md5Checksum``/``version`` on Drive. Equal token => content not re-read."""
    url: str | None = None
    size: int | None = None
    modified_at: datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Extra metadata stored with the document (owners, drive id, ...)."""


@dataclass(frozen=True, slots=True)
class FetchedContent:
    """The bytes to extract, and the format they are in.

    ``mime_type`` may differ from the file's: a Google Doc is fetched as an
    export (e.g. DOCX or Markdown), a Sheet as XLSX.
    """

    data: bytes
    mime_type: str
    extension: str
    """Lower-case extension without dot that picks the extractor (``pdf``, ``md``...)."""


@dataclass(slots=True)
class ScanResult:
    files: list[SourceFile]
    deleted: list[str] = field(default_factory=list)
    full: bool = False
    next_cursor: dict[str, Any] = field(default_factory=dict)
    """Opaque state persisted in ``rag_pipeline_state`` after a successful commit."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) for entries the source saw but could not list (unreadable,
    symlink loop); reported in the run's ``errors`` without failing the run."""


class Source(Protocol):
    """A place documents come from. Implementations raise ``ragkeeper_rag.errors`` types."""

    pipeline_type: str

    async def scan(self, cursor: Mapping[str, Any] | None) -> ScanResult:
        """Return changes since ``cursor`` (``None``: first run, list everything)."""
        ...

    async def fetch(self, file: SourceFile) -> FetchedContent:
        """Download/read one file. Raise ``FileSkipped`` for a per-file failure."""
        ...

    async def aclose(self) -> None:
        """Release clients."""
        ...
