"""Bytes of a file in, text (and tables) out: one ``extract`` for every supported format.

``extract(data, extension)`` picks the extractor by extension and guarantees:

* the result's text uses ``\\n`` newlines, ``#`` heading lines where the format
  has headings, and holds no NUL characters or lone surrogates (Postgres text
  and jsonb reject both), in the text and in table values alike;
* **an empty file is not an error**: zero bytes, or only whitespace, give
  ``Extracted(text="", title=None, tables=[])`` so the engine stores a document
  with no chunks. An empty file is a legitimate state (a placeholder, a file
  being written), and reporting it in ``errors`` would mark every scheduled
  run ``partial`` for as long as it exists;
* every failure is an ``ExtractionError`` (a ``FileSkipped``) with a one-line
  reason naming the format, chained to the library exception with ``from``;
* the per-file caps of ``limits`` (``ExtractionLimits``) hold: a DOCX/XLSX archive
  is measured before it is parsed (``archive``), rows and pages are counted as they
  are read, and the text length is checked before the result is returned. A file
  over a cap is refused whole with ``LimitExceeded``. A ``MemoryError`` is not
  turned into an ``ExtractionError``: the worker running the extraction reports it
  as the file's memory limit (``workers.py``).

Exceptions::

    ragkeeper_knowledge.errors.FileSkipped
    └── ExtractionError     unsupported format, binary or undecodable text,
        │                   corrupt or password-protected PDF, broken DOCX/XLSX
        └── LimitExceeded   over a per-file cap; the reason names its RAG_* setting

PDFs and images also say where each page's text lies (``Extracted.pages``), so a chunk
cites its page; ``extract_file`` returns a file's text as ``Section``s, one per page.

Per-format modules: ``text`` (txt, md, html), ``office`` (pdf, docx),
``tabular`` (csv, tsv, xlsx), ``ocr`` (png, jpg, jpeg, webp, and scanned PDF pages);
``archive`` checks zip-based formats.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ragkeeper_knowledge.extraction.archive import check_archive
from ragkeeper_knowledge.extraction.model import (
    DEFAULT_LIMITS,
    Extracted,
    ExtractionError,
    ExtractionLimits,
    LimitExceeded,
    Page,
    Section,
    Table,
    check_text_length,
    one_line,
)
from ragkeeper_knowledge.extraction.ocr import IMAGE_EXTENSIONS, extract_image
from ragkeeper_knowledge.extraction.office import extract_docx, extract_pdf
from ragkeeper_knowledge.extraction.tabular import extract_csv, extract_tsv, extract_xlsx
from ragkeeper_knowledge.extraction.text import extract_html, extract_markdown, extract_txt

__all__ = [
    "DEFAULT_LIMITS",
    "IMAGE_EXTENSIONS",
    "MIME_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "ZIP_EXTENSIONS",
    "Extracted",
    "ExtractionError",
    "ExtractionLimits",
    "LimitExceeded",
    "Page",
    "Section",
    "Table",
    "extract",
    "extract_file",
]

log = logging.getLogger(__name__)

Extractor = Callable[[bytes, ExtractionLimits], Extracted]


def _uncapped(extractor: Callable[[bytes], Extracted]) -> Extractor:
    """An extractor whose output is bounded by its input (only the text cap applies, after)."""
    return lambda data, _limits: extractor(data)


_EXTRACTORS: dict[str, tuple[str, Extractor]] = {
    "txt": ("unreadable text", _uncapped(extract_txt)),
    "md": ("unreadable Markdown", _uncapped(extract_markdown)),
    "markdown": ("unreadable Markdown", _uncapped(extract_markdown)),
    "html": ("unreadable HTML", _uncapped(extract_html)),
    "htm": ("unreadable HTML", _uncapped(extract_html)),
    "pdf": ("corrupt PDF", extract_pdf),
    "docx": ("corrupt DOCX", _uncapped(extract_docx)),
    "csv": ("malformed CSV", extract_csv),
    "tsv": ("malformed TSV", extract_tsv),
    "xlsx": ("corrupt XLSX", extract_xlsx),
    **dict.fromkeys(sorted(IMAGE_EXTENSIONS), ("unreadable image", extract_image)),
}
"""Extension -> (how a failure is described in the one-line reason, extractor)."""

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_EXTRACTORS)
ZIP_EXTENSIONS: frozenset[str] = frozenset({"docx", "xlsx"})
"""Formats that are zip archives: measured by ``archive.check_archive`` before parsing."""

MIME_EXTENSIONS: dict[str, str] = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
}
"""The extension that picks the extractor for a file known by its MIME type."""


def extract(data: bytes, extension: str, limits: ExtractionLimits = DEFAULT_LIMITS) -> Extracted:
    """Turn the bytes of one file into text (and tables for tabular formats).

    Args:
        data: the whole file content.
        extension: lower- or upper-case extension, with or without the dot.
        limits: the per-file caps (the defaults of the ``RAG_*`` settings unless given).

    Raises:
        LimitExceeded: the file goes over a cap of ``limits``.
        ExtractionError: the format is unsupported or the content cannot be read.
        MemoryError: the process ran out of memory (its limit) while extracting.
    """
    ext = extension.lower().lstrip(".")
    entry = _EXTRACTORS.get(ext)
    if entry is None:
        raise ExtractionError(f"unsupported format: {extension!r}")
    failure, extractor = entry
    if not data or data.isspace():
        return Extracted(text="", title=None, tables=[])
    try:
        if ext in ZIP_EXTENSIONS:
            check_archive(data, limits)
        result = extractor(data, limits)
    except (ExtractionError, MemoryError):
        raise
    except Exception as exc:
        # Parsers raise anything on hostile input (KeyError, ValueError, zipfile
        # and lxml errors, RecursionError...): all of it means "this file is broken".
        raise ExtractionError(f"{failure}: {one_line(exc)}") from exc
    check_text_length(len(result.text), limits)
    return _sanitised(result)


def extract_file(
    source: bytes | Path, kind: str, limits: ExtractionLimits = DEFAULT_LIMITS
) -> list[Section]:
    """A file's text by citation: one ``Section`` per PDF page or image, else one in all.

    Args:
        source: the file's bytes, or its path.
        kind: a MIME type (``image/png``, parameters ignored) or an extension (``pdf``).
        limits: as for ``extract``, which does the work and raises the same errors.
    """
    data = source.read_bytes() if isinstance(source, Path) else source
    extension = kind
    if "/" in kind:
        mime = kind.split(";", 1)[0].strip().lower()
        extension = MIME_EXTENSIONS.get(mime, "")
        if not extension:
            raise ExtractionError(f"unsupported format: {mime!r}")
    return extract(data, extension, limits).sections()


def _sanitised(result: Extracted) -> Extracted:
    tables = [
        dataclasses.replace(
            table,
            columns=[_clean(name) for name in table.columns],
            rows=[{_clean(k): _clean_value(v) for k, v in row.items()} for row in table.rows],
        )
        for table in result.tables
    ]
    title = _clean(result.title).strip() if result.title else None
    text, pages = _clean_pages(result.text, result.pages)
    return Extracted(text=text, title=title or None, tables=tables, pages=pages)


def _clean_pages(text: str, pages: tuple[Page, ...]) -> tuple[str, tuple[Page, ...]]:
    """``_clean`` of the text, part by part so each page's offsets follow the cleaning."""
    if not pages:
        return _clean(text), pages
    parts: list[str] = []
    spans: list[Page] = []
    offset = previous = 0
    for page in pages:
        gap, body = _clean(text[previous : page.start]), _clean(text[page.start : page.end])
        start = offset + len(gap)
        spans.append(dataclasses.replace(page, start=start, end=start + len(body)))
        parts += [gap, body]
        offset, previous = start + len(body), page.end
    parts.append(_clean(text[previous:]))
    return "".join(parts), tuple(spans)


def _clean(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _clean_value(value: Any) -> Any:
    return _clean(value) if isinstance(value, str) else value
