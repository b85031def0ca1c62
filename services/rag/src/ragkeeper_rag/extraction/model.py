"""The shapes every extractor returns, and the one error they raise.

Kept apart from ``__init__`` so the per-format modules can import them without
a cycle. ``ExtractionError`` is a ``FileSkipped``: the engine reports the file in
the run's ``errors`` and goes on, it never fails the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ragkeeper_rag.errors import FileSkipped

REASON_MAX_CHARS = 200
"""A reason is one line of at most this many characters (it lands in stats JSON)."""


@dataclass(frozen=True, slots=True)
class Table:
    """One sheet (XLSX) or the whole file (CSV/TSV) as columns and JSON-ready rows."""

    sheet: str
    """``''`` for CSV/TSV, the sheet name for XLSX."""
    columns: list[str]
    """Header row, de-duplicated (``name``, ``name_2``), blanks named ``column_<n>``."""
    rows: list[dict[str, Any]]
    """One dict per data row; values are str/int/float/bool/None, dates as ISO strings."""


@dataclass(frozen=True, slots=True)
class Extracted:
    """What a file says, ready for chunking (and, for tabular files, for ``document_rows``)."""

    text: str
    """Markdown-ish text; headings are ``#`` lines so chunking can follow the structure."""
    title: str | None
    """From the document itself when it has one (HTML title, first H1, DOCX/PDF metadata)."""
    tables: list[Table]
    """Tabular files only (CSV, TSV, XLSX); empty otherwise."""


class ExtractionError(FileSkipped):
    """A file could not be turned into text; the message is a one-line reason."""


def one_line(exc: BaseException) -> str:
    """A short single-line description of ``exc`` for an error reason."""
    message = " ".join(str(exc)[: REASON_MAX_CHARS * 2].split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if len(text) > REASON_MAX_CHARS:
        text = text[: REASON_MAX_CHARS - 3] + "..."
    return text
