"""The shapes every extractor returns, the caps it works under, and the errors it raises.

Kept apart from ``__init__`` so the per-format modules can import them without
a cycle. ``ExtractionError`` is a ``FileSkipped``: the ingestion engine reports the file
in the run's ``errors`` and goes on, it never fails the whole run; the agent refuses an
attachment with it. ``LimitExceeded``
is the ``ExtractionError`` of a file that goes over one of ``ExtractionLimits``:
the whole file is refused (nothing of it is indexed, its stored version stays),
and the reason names the setting of the cap.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from ragkeeper_knowledge.errors import FileSkipped

MIB = 1024 * 1024

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
class Page:
    """Where one cited part of ``Extracted.text`` lies: a PDF page, or an image's text."""

    number: int | None
    """1-based PDF page; ``None`` for an image (the file itself is the citation)."""
    start: int
    """Offset of the part in ``Extracted.text``."""
    end: int
    """Offset just past the part."""
    ocr: bool
    """Whether the text was recognised in pixels (OCR) rather than read from a text layer."""


@dataclass(frozen=True, slots=True)
class Section:
    """A part of a file with its own citation: what ``extract_file`` returns."""

    text: str
    page: int | None
    """1-based PDF page, or ``None`` (an image, or a format without pages)."""
    ocr: bool


@dataclass(frozen=True, slots=True)
class Extracted:
    """What a file says, ready for chunking (and, for tabular files, for ``document_rows``)."""

    text: str
    """Markdown-ish text; headings are ``#`` lines so chunking can follow the structure."""
    title: str | None
    """From the document itself when it has one (HTML title, first H1, DOCX/PDF metadata)."""
    tables: list[Table]
    """Tabular files only (CSV, TSV, XLSX); empty otherwise."""
    pages: tuple[Page, ...] = ()
    """PDFs and images: the parts of ``text`` by page, in order; empty for other formats."""

    def page_at(self, offset: int) -> Page | None:
        """The page holding ``offset`` of ``text`` (the last one starting at or before it)."""
        index = bisect.bisect_right(self.pages, offset, key=lambda page: page.start)
        return self.pages[index - 1] if index else None

    def sections(self) -> list[Section]:
        """The text by citation: one section per page, or the whole text as one."""
        if not self.pages:
            return [Section(self.text, None, ocr=False)] if self.text else []
        return [Section(self.text[p.start : p.end], p.number, p.ocr) for p in self.pages]


class ExtractionError(FileSkipped):
    """A file could not be turned into text; the message is a one-line reason."""


def one_line(exc: BaseException) -> str:
    """A short single-line description of ``exc`` for an error reason."""
    message = " ".join(str(exc)[: REASON_MAX_CHARS * 2].split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if len(text) > REASON_MAX_CHARS:
        text = text[: REASON_MAX_CHARS - 3] + "..."
    return text


@dataclass(frozen=True, slots=True)
class ExtractionLimits:
    """Per-file caps against decompression bombs (``RAG_*`` settings, docs/architecture.md).

    The first seven bound what one file may turn into; the next two bound the worker
    process that extracts it (``workers.py``); the last two say whether and up to which
    image size pixels are OCR'd (``ocr.py``).
    """

    max_uncompressed_bytes: int = 256 * MIB
    """DOCX/XLSX: total declared uncompressed size of the zip's entries."""
    max_zip_entries: int = 10_000
    """DOCX/XLSX: entries in the zip."""
    max_compression_ratio: int = 200
    """DOCX/XLSX: uncompressed/compressed size of any entry above ``RATIO_MIN_BYTES``."""
    max_rows: int = 100_000
    """CSV/TSV/XLSX: data rows of all sheets together."""
    max_pages: int = 2_000
    """PDF: pages."""
    max_text_chars: int = 5_000_000
    """Every format: characters of extracted text."""
    max_chunks: int = 10_000
    """Every format: chunks the text is cut into."""
    worker_memory_bytes: int = 512 * MIB
    """Address space (``RLIMIT_AS``) of an extraction worker process; 0 = unlimited."""
    file_timeout_seconds: float = 300.0
    """Wall-clock seconds one file may take in a worker before the worker is killed."""
    ocr_enabled: bool = True
    """PNG/JPEG/WebP files and PDF pages without a text layer are OCR'd (tesseract)."""
    ocr_max_pixels: int = 40_000_000
    """Images (files, and images on a PDF page) larger than this many pixels are refused."""


DEFAULT_LIMITS = ExtractionLimits()


class LimitExceeded(ExtractionError):
    """A file goes over one of the per-file caps; the reason names the setting.

    ``what`` and ``setting`` are kept apart too (in this process only: a worker's error
    crosses back as its message), so a caller whose caps are other settings can word it."""

    what: str | None = None
    setting: str | None = None

    @classmethod
    def of(cls, what: str, setting: str, cap: float) -> LimitExceeded:
        """``refused: <what> (over <setting>=<cap>)``; the one-argument form pickles as is."""
        exc = cls(f"refused: {what} (over {setting}={cap})")
        exc.what, exc.setting = what, setting
        return exc


def check_text_length(chars: int, limits: ExtractionLimits) -> None:
    """Raise ``LimitExceeded`` once ``chars`` characters of text exceed the text cap."""
    if chars > limits.max_text_chars:
        raise LimitExceeded.of(
            f"more than {limits.max_text_chars} characters of text",
            "RAG_MAX_TEXT_CHARS_PER_FILE",
            limits.max_text_chars,
        )
