"""PDF and DOCX: page text from pypdf, paragraphs and tables from python-docx.

PDFs carry no reliable structure, so their text is page after page, separated
by blank lines; the chunker then falls back to lines and sentences. A PDF that
needs a password is refused (``ExtractionError``), but one that is encrypted
only with an *owner* password (print/copy restrictions, empty user password)
opens in every viewer, so it is decrypted with the empty password and read.
A page whose text cannot be extracted is skipped with a warning; a PDF where
every page fails is an error. A PDF with more pages than ``max_pages`` is refused
before any page is read, and reading stops as soon as the text exceeds
``max_text_chars`` (a few KB of PDF can repeat one content stream on thousands of
pages). A page without a text layer (a scan) is OCR'd (``ocr.py``) when OCR is on;
the result's ``pages`` say where each page's text lies and which were OCR'd, so
chunks cite their page. The DOCX archive is measured before parsing (``archive.check_archive``).

DOCX body content is read in document order (paragraphs and tables
interleaved). Heading styles become ``#`` levels; when the document uses the
*Title* style, that paragraph is the ``#`` line and headings move one level
down so the heading path reads "Title > Heading 1 > Heading 2". Tables become
one line per row with cells joined by `` | `` (merged cells once); consecutive
list paragraphs become one block of ``-`` lines.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable

import docx
from docx.table import Table as DocxTable
from docx.text.paragraph import Paragraph
from pypdf import PasswordType, PdfReader

from ragkeeper_knowledge.extraction.model import (
    DEFAULT_LIMITS,
    Extracted,
    ExtractionError,
    ExtractionLimits,
    LimitExceeded,
    Page,
    check_text_length,
    one_line,
)
from ragkeeper_knowledge.extraction.ocr import ocr_pdf_page

log = logging.getLogger(__name__)

MAX_HEADING_LEVEL = 6
_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def extract_pdf(data: bytes, limits: ExtractionLimits = DEFAULT_LIMITS) -> Extracted:
    """Text of every page, in order; the title from the document information dictionary.

    Raises ``LimitExceeded`` before reading any page when the PDF has more pages than
    ``limits.max_pages``, and as soon as the text read so far exceeds the text cap.
    """
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")
        except Exception as exc:  # any failure here means "cannot open"
            raise ExtractionError(f"encrypted PDF: cannot decrypt ({one_line(exc)})") from exc
        if opened == PasswordType.NOT_DECRYPTED:
            raise ExtractionError("encrypted PDF: a password is required to open it")
    total = len(reader.pages)
    if total > limits.max_pages:
        raise LimitExceeded.of(f"{total} pages", "RAG_MAX_PAGES_PER_FILE", limits.max_pages)
    text, pages = _joined(_page_texts(reader, total, limits))
    return Extracted(text=text, title=_pdf_title(reader), tables=[], pages=pages)


def _joined(pages: list[tuple[int, str, bool]]) -> tuple[str, tuple[Page, ...]]:
    """Page texts separated by blank lines, and where each page lies in the result."""
    spans: list[Page] = []
    offset = 0
    for number, text, ocr in pages:
        spans.append(Page(number, offset, offset + len(text), ocr))
        offset += len(text) + 2
    return "\n\n".join(text for _, text, _ in pages), tuple(spans)


def _page_texts(
    reader: PdfReader, total: int, limits: ExtractionLimits
) -> list[tuple[int, str, bool]]:
    """(page number, text, OCR'd) of each non-blank page; unreadable pages are skipped.

    A page without a text layer is OCR'd when ``limits.ocr_enabled`` (its images'
    text). Every page unreadable is an error.
    """
    pages: list[tuple[int, str, bool]] = []
    failures: list[str] = []
    chars = 0
    for number, page in enumerate(reader.pages, 1):
        try:
            text = page.extract_text().strip()
            ocr = not text and limits.ocr_enabled
            if ocr:
                text = ocr_pdf_page(page, limits)
        except (ExtractionError, MemoryError):
            raise  # a page over a cap, no OCR engine, out of memory: the file is refused
        except Exception as exc:  # one bad page must not lose the others
            failures.append(f"page {number}: {one_line(exc)}")
            continue
        if text:
            pages.append((number, text, ocr))
            chars += len(text) + 2
            check_text_length(chars, limits)
    if failures:
        if len(failures) == total:
            raise ExtractionError(f"corrupt PDF: no page could be read ({failures[0]})")
        log.warning("skipped %s of %s PDF pages: %s", len(failures), total, failures[0])
    return pages


def _pdf_title(reader: PdfReader) -> str | None:
    try:
        metadata = reader.metadata
        title = metadata.title if metadata is not None else None
    except Exception:  # a broken info dictionary only costs the title
        log.debug("PDF metadata unreadable", exc_info=True)
        return None
    if not isinstance(title, str):
        return None
    return " ".join(title.split()) or None


def extract_docx(data: bytes) -> Extracted:
    """Paragraphs with heading styles as ``#`` lines, list items as ``-``, tables as rows."""
    document = docx.Document(io.BytesIO(data))
    blocks: list[Paragraph | DocxTable] = list(document.iter_inner_content())
    style_name = _style_names()
    has_title_style = any(
        isinstance(block, Paragraph) and style_name(block).lower() == "title" for block in blocks
    )
    shift = 1 if has_title_style else 0

    out: list[str] = []
    styled_title: str | None = None
    first_heading: str | None = None
    in_list = False  # consecutive list items form one block
    for block in blocks:
        if isinstance(block, DocxTable):
            in_list = False
            rows = _table_lines(block)
            if rows:
                out.append("\n".join(rows))
            continue
        text = block.text.strip()
        if not text:
            continue
        style = style_name(block)
        level = _heading_level(style, shift)
        if level:
            line = " ".join(text.split())
            out.append(f"{'#' * level} {line}")
            if level == 1 and first_heading is None:
                first_heading = line
            if style.lower() == "title" and styled_title is None:
                styled_title = line
        elif style.lower().startswith("list"):
            if in_list:
                out[-1] += f"\n- {text}"
            else:
                out.append(f"- {text}")
            in_list = True
            continue
        else:
            out.append(text)
        in_list = False
    core_title = (document.core_properties.title or "").strip()
    title = core_title or styled_title or first_heading
    return Extracted(text="\n\n".join(out), title=title or None, tables=[])


def _style_names() -> Callable[[Paragraph], str]:
    """A paragraph -> style name lookup for one document, resolving each style id once.

    python-docx resolves ``Paragraph.style`` by scanning the styles part on every call (and
    all of it for paragraphs in the default style); that was over half of the extraction
    time of a typical document.
    """
    names: dict[str | None, str] = {}

    def style_name(paragraph: Paragraph) -> str:
        style_id = paragraph._p.style  # the pStyle id; None for the default paragraph style
        if style_id not in names:
            style = paragraph.style
            names[style_id] = (style.name if style is not None else None) or ""
        return names[style_id]

    return style_name


def _heading_level(style: str, shift: int) -> int:
    if style.lower() == "title":
        return 1
    found = _HEADING_STYLE.match(style)
    if not found:
        return 0
    return min(MAX_HEADING_LEVEL, max(1, int(found.group(1))) + shift)


def _table_lines(table: DocxTable) -> list[str]:
    lines: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # a merged cell repeats across the span
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            lines.append(" | ".join(cells))
    return lines
