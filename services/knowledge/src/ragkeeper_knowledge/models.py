"""Plain data the store reads and writes (no database types leak out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def document_id(pipeline_id: str, source_id: str) -> str:
    """Documents are keyed by owner and source id, so pipelines never collide.

    docs/architecture.md, invariant 3: one owner per document.
    """
    return f"{pipeline_id}:{source_id}"


@dataclass(frozen=True, slots=True)
class ChunkWrite:
    content: str
    content_hash: str
    embedding: Sequence[float]
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RowWrite:
    sheet: str
    row_number: int
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DocumentWrite:
    """Everything stored for one source file, replaced atomically.

    docs/architecture.md, invariant 1: one transaction per document.
    """

    pipeline_id: str
    source_id: str
    title: str
    version: str
    content_hash: str
    chunks: Sequence[ChunkWrite]
    url: str | None = None
    path: str | None = None
    mime_type: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    schema: Mapping[str, Sequence[str]] | None = None
    """Tabular files: sheet name ('' for CSV) -> column names."""
    rows: Sequence[RowWrite] = ()

    @property
    def id(self) -> str:
        return document_id(self.pipeline_id, self.source_id)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """What the sync engine compares before reading a file again."""

    source_id: str
    version: str
    content_hash: str
    path: str | None = None
    url: str | None = None
    file_title: str | None = None
    """The source's own name for the file (a title taken from the content wins over it)."""


@dataclass(frozen=True, slots=True)
class PipelineState:
    pipeline_id: str
    pipeline_type: str
    cursor: dict[str, Any]
    last_check_time: datetime | None
    last_success_time: datetime | None


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One ranked passage; ``score`` is the fused reciprocal-rank score."""

    chunk_id: int
    document_id: str
    pipeline_id: str
    title: str
    url: str | None
    content: str
    score: float
    metadata: dict[str, Any]
    vector_rank: int | None = None
    text_rank: int | None = None


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: str
    pipeline_id: str
    title: str
    url: str | None
    path: str | None
    mime_type: str | None
    schema: dict[str, list[str]] | None
    chunk_count: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DocumentText:
    info: DocumentInfo
    content: str
    truncated: bool
