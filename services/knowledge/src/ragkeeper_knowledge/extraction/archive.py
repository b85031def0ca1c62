"""Zip-based formats (DOCX, XLSX): the archive is measured before any parser opens it.

A zip declares, per entry, its compressed and uncompressed sizes. A decompression bomb
is a small file whose entries expand a thousand-fold (a 68 KB XLSX holding a million
rows), so before parsing, ``check_archive`` refuses an archive with

* more entries than ``max_zip_entries`` (read first from the end-of-central-directory
  record, so a central directory of millions of entries is never loaded);
* an entry above ``RATIO_MIN_BYTES`` that expands more than ``max_compression_ratio``
  times (XML parts compress 5-20 times, a bomb about 1,000 times);
* a total uncompressed size above ``max_uncompressed_bytes``.

The sizes are declared, and a declaration can lie; Python's ``zipfile`` (which both
python-docx and openpyxl read through) stops decompressing an entry at its declared size
and then fails its CRC check, so a lying entry yields no more than it declared. What a
parser builds from the bytes is bounded by the row, page, text and chunk caps and, as
the backstop, by the worker's memory limit and timeout (``workers.py``).
"""

from __future__ import annotations

import io
import struct
import zipfile

from ragkeeper_knowledge.extraction.model import ExtractionLimits, LimitExceeded

RATIO_MIN_BYTES = 1024 * 1024
"""Entries smaller than this uncompressed are not ratio-checked (tiny parts vary widely)."""

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"


def check_archive(data: bytes, limits: ExtractionLimits) -> None:
    """Refuse an archive over the entry, ratio or total-size caps (``LimitExceeded``).

    Raises:
        LimitExceeded: a cap is exceeded.
        zipfile.BadZipFile: not a readable zip (the caller reports it as a corrupt file).
    """
    declared = declared_entries(data)
    if declared is not None:
        _check_entries(declared, limits)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = archive.infolist()
    _check_entries(len(entries), limits)
    total = 0
    for entry in entries:
        total += entry.file_size
        ratio_cap = limits.max_compression_ratio * max(entry.compress_size, 1)
        if entry.file_size > RATIO_MIN_BYTES and entry.file_size > ratio_cap:
            ratio = entry.file_size // max(entry.compress_size, 1)
            raise LimitExceeded.of(
                f"zip entry {entry.filename[:60]!r} expands {ratio} times",
                "RAG_MAX_COMPRESSION_RATIO",
                limits.max_compression_ratio,
            )
    if total > limits.max_uncompressed_bytes:
        raise LimitExceeded.of(
            f"{total} bytes uncompressed",
            "RAG_MAX_UNCOMPRESSED_BYTES",
            limits.max_uncompressed_bytes,
        )


def _check_entries(count: int, limits: ExtractionLimits) -> None:
    if count > limits.max_zip_entries:
        raise LimitExceeded.of(
            f"{count} zip entries", "RAG_MAX_ZIP_ENTRIES", limits.max_zip_entries
        )


def declared_entries(data: bytes) -> int | None:
    """The entry count the end-of-central-directory record declares (zip64 included)."""
    at = data.rfind(_EOCD, max(0, len(data) - _EOCD_SIZE - 0xFFFF))
    if at < 0 or at + _EOCD_SIZE > len(data):
        return None
    (total,) = struct.unpack_from("<H", data, at + 10)
    locator = at - 20
    if total == 0xFFFF and locator >= 0 and data[locator : locator + 4] == _ZIP64_LOCATOR:
        (record,) = struct.unpack_from("<Q", data, locator + 8)
        if data[record : record + 4] == _ZIP64_EOCD and record + 40 <= len(data):
            (total,) = struct.unpack_from("<Q", data, record + 32)
    return int(total)
