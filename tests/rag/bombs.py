"""Decompression bombs and other hostile files, generated small (tests/rag/test_bombs.py)."""

from __future__ import annotations

import io
import time
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

from ragkeeper_knowledge.extraction import Extracted, ExtractionLimits
from ragkeeper_rag.chunking import ChunkPiece

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="{part}" ContentType="{type}"/>'
    "</Types>"
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="{type}" Target="{target}"/></Relationships>'
)
_OFFICE_DOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
_WORKSHEET = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"
_SHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_WORD_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def zip_of(entries: dict[str, bytes | Iterable[bytes]]) -> bytes:
    """A deflated zip; an entry given as an iterable of blocks is streamed, never held whole."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            if isinstance(content, bytes):
                archive.writestr(name, content)
                continue
            with archive.open(name, "w", force_zip64=True) as entry:
                for block in content:
                    entry.write(block)
    return out.getvalue()


def _repeat(block: bytes, times: int, head: bytes = b"", tail: bytes = b"") -> Iterable[bytes]:
    yield head
    batch = block * 1000
    for _ in range(times // 1000):
        yield batch
    yield block * (times % 1000)
    yield tail


def xlsx_with_rows(rows: int) -> bytes:
    """One sheet of ``rows`` identical rows (no row numbers, so it compresses ~1000 times)."""
    workbook = (
        f'<workbook xmlns="{_SHEET_NS}" xmlns:r="http://schemas.openxmlformats.org/'
        'officeDocument/2006/relationships"><sheets>'
        '<sheet name="Data" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )
    sheet_head = f'<worksheet xmlns="{_SHEET_NS}"><sheetData>'.encode()
    row = b'<row><c t="inlineStr"><is><t>bomb</t></is></c><c><v>1</v></c></row>'
    return zip_of(
        {
            "[Content_Types].xml": _CONTENT_TYPES.format(
                part="/xl/workbook.xml",
                type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
            ).encode(),
            "_rels/.rels": _RELS.format(type=_OFFICE_DOC, target="xl/workbook.xml").encode(),
            "xl/workbook.xml": workbook.encode(),
            "xl/_rels/workbook.xml.rels": _RELS.format(
                type=_WORKSHEET, target="worksheets/sheet1.xml"
            ).encode(),
            "xl/worksheets/sheet1.xml": _repeat(row, rows, sheet_head, b"</sheetData></worksheet>"),
        }
    )


def docx_with_paragraphs(paragraphs: int, extra_entries: int = 0) -> bytes:
    """A DOCX whose document.xml repeats one paragraph; ``extra_entries`` tiny parts beside it."""
    head = f'<w:document xmlns:w="{_WORD_NS}"><w:body>'.encode()
    paragraph = b"<w:p><w:r><w:t>All work and no play makes a dull bomb.</w:t></w:r></w:p>"
    entries: dict[str, bytes | Iterable[bytes]] = {
        "[Content_Types].xml": _CONTENT_TYPES.format(
            part="/word/document.xml",
            type="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
        ).encode(),
        "_rels/.rels": _RELS.format(type=_OFFICE_DOC, target="word/document.xml").encode(),
        "word/document.xml": _repeat(paragraph, paragraphs, head, b"</w:body></w:document>"),
    }
    for i in range(extra_entries):
        entries[f"customXml/item{i}.xml"] = b"<x/>"
    return zip_of(entries)


def pdf_of(pages: int, content: bytes) -> bytes:
    """A PDF of ``pages`` pages that all show one FlateDecode content stream."""
    stream = zlib.compress(content, 9)
    kids = " ".join(f"{5 + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>"
    )
    objects += [page] * pages
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    trailer = b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
    out.write(trailer % (len(objects) + 1, xref))
    return out.getvalue()


def text_lines(lines: int) -> bytes:
    """A content stream showing ``lines`` lines of about 100 characters."""
    line = b"(" + b"lorem ipsum " * 8 + b") Tj T*\n"
    return b"BT /F1 12 Tf 14 TL 72 720 Td\n" + line * lines + b"ET"


def slow_pdf(lines: int = 60_000) -> bytes:
    """One page whose text takes pypdf seconds: quadratic in ``lines`` (30,000: about 5 s,
    60,000: about 18 s on one unloaded core); within every cap but the timeout."""
    return pdf_of(1, text_lines(lines))


def csv_rows(rows: int) -> bytes:
    return b"a,b\n" + b"1,2\n" * rows


def scripted_work(
    data: bytes, extension: str, size: int, overlap: int, limits: ExtractionLimits
) -> tuple[Extracted, list[ChunkPiece]]:
    """A stand-in for ``extract_and_chunk`` that a test scripts through ``data``.

    ``quick`` returns at once. ``stuck:<marker>`` touches the marker and never returns.
    ``once:<marker>`` does the same the first time, and returns at once when retried (the
    marker exists by then): so it is surely in flight when its pool is killed.
    """
    verb, _, path = data.decode().partition(":")
    if verb == "once" and Path(path).exists():
        return Extracted(text="retried", title=None, tables=[]), []
    if verb in ("once", "stuck"):
        Path(path).touch()
        time.sleep(3600)
    return Extracted(text="quick", title=None, tables=[]), []
