"""CSV, TSV and XLSX: rows for ``document_rows`` plus a searchable text rendering.

Every table keeps all its rows in ``Extracted.tables`` (the agent queries them
with SQL). The text rendering exists so the same facts are found by search: a
``Columns:`` line, then one line per row written as ``column: value | ...``,
so a chunk cut anywhere still says what each value means (a Markdown table
would leave the header behind in the first chunk). The rendering is bounded
(``MAX_TEXT_ROWS``/``MAX_TEXT_CHARS`` per table) so a 100,000-row export does not
turn into thousands of embeddings; the rows themselves are never truncated. A file
with more data rows than ``max_rows`` (all sheets together) is refused whole, and
reading stops at the first row over the cap, so a sheet that expands to a million
rows is never held in memory.

CSV cells that look like plain integers or decimals become numbers so SQL over
rows can compare them (``"007"`` and ``"1,5"`` stay strings: a leading zero or
a decimal comma is an identifier or a locale we cannot guess). XLSX cells keep
their types; dates become ISO strings (``2024-03-01`` at midnight, otherwise
``2024-03-01T09:30:00``). Formulas give their cached value (``data_only``), so a
workbook saved by a tool that never computed them yields ``None``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import openpyxl

from ragkeeper_knowledge.extraction.model import (
    DEFAULT_LIMITS,
    Extracted,
    ExtractionLimits,
    LimitExceeded,
    Table,
)
from ragkeeper_knowledge.extraction.text import decode_text

log = logging.getLogger(__name__)

MAX_TEXT_ROWS = 2000
MAX_TEXT_CHARS = 200_000
SNIFF_SAMPLE_CHARS = 16384
SNIFF_DELIMITERS = ",;\t|"

_INTEGER = re.compile(r"[+-]?(?:0|[1-9][0-9]{0,17})")
_DECIMAL = re.compile(
    r"[+-]?(?:0|[1-9][0-9]*)?\.[0-9]+(?:[eE][+-]?[0-9]+)?|[+-]?(?:0|[1-9][0-9]*)[eE][+-]?[0-9]+"
)


def extract_csv(data: bytes, limits: ExtractionLimits = DEFAULT_LIMITS) -> Extracted:
    """Comma-separated (or whatever delimiter the sniffer finds) values."""
    return _delimited(data, None, limits)


def extract_tsv(data: bytes, limits: ExtractionLimits = DEFAULT_LIMITS) -> Extracted:
    """Tab-separated values: the delimiter is known, quoting is still honoured."""
    return _delimited(data, "\t", limits)


def _delimited(data: bytes, delimiter: str | None, limits: ExtractionLimits) -> Extracted:
    text = decode_text(data)
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(text, delimiter))
    table = build_table("", reader, _csv_value, max_rows=limits.max_rows)
    tables = [table] if table is not None else []
    return Extracted(text=render_tables(tables, headed=False), title=None, tables=tables)


def _dialect(text: str, delimiter: str | None) -> type[csv.Dialect] | csv.Dialect:
    if delimiter == "\t":
        return csv.excel_tab
    sample = text[:SNIFF_SAMPLE_CHARS]
    if len(text) > SNIFF_SAMPLE_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=SNIFF_DELIMITERS)
    except csv.Error:
        log.debug("CSV dialect not recognised, using commas")
        return csv.excel
    if not dialect.quotechar:
        dialect.quotechar = '"'
    return dialect


def _csv_value(raw: Any) -> Any:
    value = str(raw).strip()
    if not value:
        return None
    if _INTEGER.fullmatch(value):
        return int(value)
    if _DECIMAL.fullmatch(value):
        number = float(value)
        return number if math.isfinite(number) else value
    return value


def extract_xlsx(data: bytes, limits: ExtractionLimits = DEFAULT_LIMITS) -> Extracted:
    """Every worksheet becomes a table and a ``# <sheet>`` section of text."""
    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        tables: list[Table] = []
        rows_left = limits.max_rows  # the cap holds for all sheets together
        for sheet in workbook.worksheets:
            if hasattr(sheet, "reset_dimensions"):
                # Read-only mode trusts the stored dimension, which some writers get wrong.
                sheet.reset_dimensions()
            raw = sheet.iter_rows(values_only=True)
            table = build_table(
                str(sheet.title), raw, _xlsx_value, max_rows=rows_left, cap=limits.max_rows
            )
            if table is not None:
                tables.append(table)
                rows_left -= len(table.rows)
        title = (workbook.properties.title or "").strip() or None
    finally:
        workbook.close()
    return Extracted(text=render_tables(tables, headed=True), title=title, tables=tables)


def _xlsx_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0, 0) and value.tzinfo is None:
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    text = str(value)
    return text if text.strip() else None


def build_table(
    sheet: str,
    raw_rows: Iterable[Sequence[Any]],
    convert: Callable[[Any], Any],
    *,
    max_rows: int | None = None,
    cap: int | None = None,
) -> Table | None:
    """A ``Table`` from raw rows: the first non-blank row is the header.

    Returns ``None`` when there is no non-blank row at all. Trailing columns
    that are blank everywhere (header included) are dropped; cells beyond the
    header get ``column_<n>`` names. Reading stops with ``LimitExceeded`` at the
    first data row beyond ``max_rows`` (``cap``, the per-file setting, is what the
    reason names; it defaults to ``max_rows``).
    """
    header: list[Any] | None = None
    body: list[list[Any]] = []
    width = 0
    for raw in raw_rows:
        values = [None if cell is None else convert(cell) for cell in raw]
        used = _used_width(values)
        if used == 0:
            continue
        width = max(width, used)
        if header is None:
            header = values
            continue
        if max_rows is not None and len(body) >= max_rows:
            limit = max_rows if cap is None else cap
            raise LimitExceeded.of(f"more than {limit} rows", "RAG_MAX_ROWS_PER_FILE", limit)
        body.append(values)
    if header is None:
        return None
    columns = column_names([header[i] if i < len(header) else None for i in range(width)])
    rows = [
        {name: (row[i] if i < len(row) else None) for i, name in enumerate(columns)} for row in body
    ]
    return Table(sheet=sheet, columns=columns, rows=rows)


def _used_width(values: Sequence[Any]) -> int:
    for i in range(len(values) - 1, -1, -1):
        if values[i] is not None and values[i] != "":
            return i + 1
    return 0


def column_names(header: Sequence[Any]) -> list[str]:
    """Header cells as unique, non-blank column names (``name``, ``name_2``, ``column_3``)."""
    names: list[str] = []
    used: set[str] = set()
    for position, cell in enumerate(header, 1):
        base = " ".join(str(cell).split()) if cell is not None else ""
        base = base or f"column_{position}"
        name, suffix = base, 2
        while name in used:
            name, suffix = f"{base}_{suffix}", suffix + 1
        used.add(name)
        names.append(name)
    return names


def render_tables(tables: Sequence[Table], *, headed: bool) -> str:
    """Searchable text for ``tables``: optional ``# sheet`` heading, columns, one line a row."""
    parts: list[str] = []
    for table in tables:
        if headed:
            parts.append(f"# {table.sheet}")
        parts.append("Columns: " + ", ".join(table.columns))
        lines: list[str] = []
        size = 0
        for shown, row in enumerate(table.rows):
            if shown >= MAX_TEXT_ROWS or size >= MAX_TEXT_CHARS:
                lines.append(
                    f"... {len(table.rows) - shown} more rows not shown here "
                    "(all rows are stored as table rows)"
                )
                break
            line = " | ".join(
                f"{name}: {_cell_text(value)}" for name, value in row.items() if value is not None
            )
            lines.append(line)
            size += len(line) + 1
        if lines:
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _cell_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return " ".join(str(value).split())
