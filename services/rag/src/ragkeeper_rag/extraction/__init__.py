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
  reason naming the format, chained to the library exception with ``from``.

Exceptions::

    ragkeeper_rag.errors.FileSkipped
    └── ExtractionError     unsupported format, binary or undecodable text,
                            corrupt or password-protected PDF, broken DOCX/XLSX

Per-format modules: ``text`` (txt, md, html), ``office`` (pdf, docx),
``tabular`` (csv, tsv, xlsx).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from ragkeeper_rag.extraction.model import Extracted, ExtractionError, Table, one_line
from ragkeeper_rag.extraction.office import extract_docx, extract_pdf
from ragkeeper_rag.extraction.tabular import extract_csv, extract_tsv, extract_xlsx
from ragkeeper_rag.extraction.text import extract_html, extract_markdown, extract_txt

__all__ = ["SUPPORTED_EXTENSIONS", "Extracted", "ExtractionError", "Table", "extract"]

log = logging.getLogger(__name__)

_EXTRACTORS: dict[str, tuple[str, Callable[[bytes], Extracted]]] = {
    "txt": ("unreadable text", extract_txt),
    "md": ("unreadable Markdown", extract_markdown),
    "markdown": ("unreadable Markdown", extract_markdown),
    "html": ("unreadable HTML", extract_html),
    "htm": ("unreadable HTML", extract_html),
    "pdf": ("corrupt PDF", extract_pdf),
    "docx": ("corrupt DOCX", extract_docx),
    "csv": ("malformed CSV", extract_csv),
    "tsv": ("malformed TSV", extract_tsv),
    "xlsx": ("corrupt XLSX", extract_xlsx),
}
"""Extension -> (how a failure is described in the one-line reason, extractor)."""

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_EXTRACTORS)


def extract(data: bytes, extension: str) -> Extracted:
    """Turn the bytes of one file into text (and tables for tabular formats).

    Args:
        data: the whole file content.
        extension: lower- or upper-case extension, with or without the dot.

    Raises:
        ExtractionError: the format is unsupported or the content cannot be read.
    """
    ext = extension.lower().lstrip(".")
    entry = _EXTRACTORS.get(ext)
    if entry is None:
        raise ExtractionError(f"unsupported format: {extension!r}")
    failure, extractor = entry
    if not data or data.isspace():
        return Extracted(text="", title=None, tables=[])
    try:
        result = extractor(data)
    except ExtractionError:
        raise
    except Exception as exc:
        # Parsers raise anything on hostile input (KeyError, ValueError, zipfile
        # and lxml errors, RecursionError...): all of it means "this file is broken".
        raise ExtractionError(f"{failure}: {one_line(exc)}") from exc
    return _sanitised(result)


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
    return Extracted(text=_clean(result.text), title=title or None, tables=tables)


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
