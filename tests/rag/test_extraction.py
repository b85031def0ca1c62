"""Extraction of every supported format, and refusal of what is not a document."""

from __future__ import annotations

import codecs
import importlib.util
import io
import json
import random
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from ragkeeper_knowledge.errors import FileSkipped
from ragkeeper_knowledge.extraction import (
    SUPPORTED_EXTENSIONS,
    Extracted,
    ExtractionError,
    Page,
    extract,
    tabular,
)
from ragkeeper_rag.chunking import chunk_document

from .corpus import csv_text, docx_bytes, xlsx_bytes
from .fixtures.documents import (
    corrupt_pdf,
    pdf_document,
    rich_docx,
    truncated_pdf,
    typed_xlsx,
)


def refused(data: bytes, extension: str) -> ExtractionError:
    with pytest.raises(ExtractionError) as caught:
        extract(data, extension)
    reason = str(caught.value)
    assert reason and "\n" not in reason and len(reason) <= 200
    return caught.value


# --- dispatch and empty files ---------------------------------------------------------


def test_supported_extensions_match_the_contract() -> None:
    assert {
        "txt", "md", "markdown", "html", "htm", "pdf", "docx", "csv", "tsv", "xlsx",
        "png", "jpg", "jpeg", "webp",
    } == SUPPORTED_EXTENSIONS  # fmt: skip


def test_extract_unsupported_extension_is_a_skipped_file() -> None:
    error = refused(b"PK\x03\x04", "pptx")
    assert isinstance(error, FileSkipped)
    assert "unsupported format" in str(error)


def test_extract_extension_ignores_case_and_dot() -> None:
    assert extract(b"# Hi\n\nthere", ".MD").title == "Hi"


@pytest.mark.parametrize("extension", sorted(SUPPORTED_EXTENSIONS))
@pytest.mark.parametrize("data", [b"", b" \n\t\r\n "])
def test_extract_empty_file_gives_empty_document(extension: str, data: bytes) -> None:
    assert extract(data, extension) == Extracted(text="", title=None, tables=[])


# --- plain text -----------------------------------------------------------------------


def test_extract_txt_keeps_utf8_and_normalises_newlines() -> None:
    result = extract("Café menu\r\n\r\nCrème brûlée\rTea".encode(), "txt")
    assert result == Extracted(text="Café menu\n\nCrème brûlée\nTea", title=None, tables=[])


def test_extract_txt_marks_the_headings_of_a_plain_text_manual() -> None:
    text = (
        "KESTREL K2 - QUICK START\n\nThank you.\n\nRESETTING\n\nHold the dial for 30 s.\n"
        "A LOUD WARNING SENTENCE ENDS WITH A FULL STOP.\n\nNOT A HEADING, it has lower case\n\n"
        "Wiring\n------\n\nR and C.\n\n2. BEFORE YOU START\nSwitch off the power.\n"
    )
    result = extract(text.encode(), "txt")
    assert result.title == "KESTREL K2 - QUICK START"
    assert result.text.splitlines() == [
        "# KESTREL K2 - QUICK START",
        "",
        "Thank you.",
        "",
        "## RESETTING",
        "",
        "Hold the dial for 30 s.",
        "A LOUD WARNING SENTENCE ENDS WITH A FULL STOP.",  # not after a blank line, and a "."
        "",
        "NOT A HEADING, it has lower case",
        "",
        "## Wiring",  # underlined: level 2, the underline dropped
        "",
        "",
        "R and C.",
        "",
        "## 2. BEFORE YOU START",
        "Switch off the power.",
    ]
    headings = [p.heading for p in chunk_document(result.text, size=100, overlap=0)]
    assert "KESTREL K2 - QUICK START > RESETTING" in headings


def test_extract_txt_takes_an_underlined_title_and_ignores_rules() -> None:
    result = extract(b"User guide\n==========\n\nSome text.\n\n----------\n\nMORE\n", "txt")
    assert result.title == "User guide"
    assert result.text.splitlines()[:3] == ["# User guide", "", ""]
    assert "----------" in result.text.splitlines()  # a rule under a blank line stays text
    assert result.text.endswith("## MORE\n")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (codecs.BOM_UTF16_LE + "Größe: 5 µm".encode("utf-16-le"), "Größe: 5 µm"),
        (codecs.BOM_UTF16_BE + "Größe: 5 µm".encode("utf-16-be"), "Größe: 5 µm"),
        (codecs.BOM_UTF8 + "naïve".encode(), "naïve"),
    ],
)
def test_extract_txt_follows_byte_order_marks(data: bytes, expected: str) -> None:
    assert extract(data, "txt").text == expected


def test_extract_txt_detects_a_legacy_charset() -> None:
    original = (
        "Les congés payés sont accordés après la période d'essai. "
        "Le salarié prévient son responsable deux semaines à l'avance. "
    ) * 5
    assert extract(original.encode("cp1252"), "txt").text == original


def test_extract_txt_with_nul_bytes_is_refused_as_binary() -> None:
    error = refused(b"hello\x00\x00\x01world" + bytes(range(256)), "txt")
    assert "binary" in str(error)


def test_extract_txt_of_control_characters_is_refused_as_binary() -> None:
    junk = bytes(random.Random(1).choice(range(1, 32)) for _ in range(4096))
    assert "binary" in str(refused(junk, "txt"))


def test_extract_txt_random_bytes_are_refused() -> None:
    refused(random.Random(2).randbytes(65536), "txt")


def test_extract_txt_huge_single_line_is_kept_whole_and_chunks_within_size() -> None:
    line = ("lorem ipsum dolor sit amet consectetur " * 140_000)[:5_000_000]
    result = extract(line.encode(), "txt")
    assert len(result.text) == 5_000_000
    pieces = chunk_document(result.text, size=1200, overlap=150)
    assert max(len(p.text) for p in pieces) <= 1200
    assert len(pieces) >= 5_000_000 // 1200
    assert pieces[-1].char_start + len(pieces[-1].text) == len(line.rstrip())


# --- Markdown and HTML ----------------------------------------------------------------


def test_extract_markdown_title_from_first_h1_outside_code() -> None:
    text = "```\n# not a title\n```\n\nIntro\n\n# Real Title #\n\n## Section\n"
    result = extract(text.encode(), "md")
    assert result.title == "Real Title"
    assert result.text == text


def test_extract_markdown_front_matter_gives_title_and_is_dropped() -> None:
    text = "---\ntitle: 'Leave policy'\nowner: hr\n---\n# Leave\n\nTen days."
    result = extract(text.encode(), "markdown")
    assert result.title == "Leave policy"
    assert result.text == "# Leave\n\nTen days."


HTML_PAGE = b"""<!doctype html>
<html><head><title> Kestrel   FAQ </title>
<style>body { color: red }</style>
<script>document.write("tracking pixel");</script>
</head><body>
<nav><a href="/">Home</a></nav>
<h1>Frequently <em>asked</em> questions</h1>
<p>The Kestrel thermostat
   learns your   schedule.<br>It needs Wi-Fi.</p>
<script type="text/javascript">var secret = "do not index";</script>
<h2>Setup</h2>
<ul><li>Unpack</li><li>Mount &amp; wire</li></ul>
<table><tr><th>Model</th><th>Price</th></tr><tr><td>K1</td><td>129</td></tr></table>
<pre>make install
    --prefix /opt</pre>
<noscript>enable javascript</noscript>
<h3>Reset</h3><div>Hold the dial for 10 s.</div>
</body></html>"""


def test_extract_html_keeps_headings_and_drops_scripts_and_styles() -> None:
    result = extract(HTML_PAGE, "html")
    assert result.title == "Kestrel FAQ"
    assert result.text == (
        "# Frequently asked questions\n\n"
        "The Kestrel thermostat learns your schedule.\nIt needs Wi-Fi.\n\n"
        "## Setup\n\n"
        "- Unpack\n- Mount & wire\n\n"
        "Model | Price\nK1 | 129\n\n"
        "make install\n    --prefix /opt\n\n"
        "### Reset\n\n"
        "Hold the dial for 10 s."
    )
    for hidden in ("tracking pixel", "secret", "color: red", "enable javascript", "Home"):
        assert hidden not in result.text


def test_extract_html_title_falls_back_to_first_h1() -> None:
    assert extract(b"<body><h2>Sub</h2><h1>Main</h1></body>", "htm").title == "Main"


def test_extract_html_honours_declared_charset() -> None:
    page = '<html><head><meta charset="iso-8859-1"></head><body><p>Déjà vu</p></body></html>'
    assert extract(page.encode("latin-1"), "html").text == "Déjà vu"


def test_extract_html_xhtml_declaration_is_not_an_error() -> None:
    page = b'<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body><h1>X</h1></body></html>'
    assert extract(page, "html").text == "# X"


# --- PDF ------------------------------------------------------------------------------


def test_extract_pdf_pages_in_order_with_metadata_title() -> None:
    data = pdf_document(
        [["Kestrel datasheet", "Voltage 24 V"], ["Warranty two years"]], title="Kestrel"
    )
    result = extract(data, "pdf")
    assert result == Extracted(
        text="Kestrel datasheet\nVoltage 24 V\n\nWarranty two years",
        title="Kestrel",
        tables=[],
        pages=(Page(1, 0, 30, ocr=False), Page(2, 32, 50, ocr=False)),
    )


@pytest.mark.parametrize("data", [corrupt_pdf(), truncated_pdf(), b"not a pdf at all"])
def test_extract_corrupt_pdf_is_refused_with_the_cause_chained(data: bytes) -> None:
    error = refused(data, "pdf")
    assert str(error).startswith("corrupt PDF")
    assert error.__cause__ is not None


def test_extract_password_protected_pdf_is_refused() -> None:
    error = refused(pdf_document([["secret plans"]], user_password="s3cret"), "pdf")
    assert str(error) == "encrypted PDF: a password is required to open it"


def test_extract_pdf_with_only_an_owner_password_is_read() -> None:
    data = pdf_document([["printing restricted"]], owner_password="owner")
    assert extract(data, "pdf").text == "printing restricted"


# --- DOCX -----------------------------------------------------------------------------


def test_extract_docx_maps_styles_to_headings_lists_and_tables() -> None:
    result = extract(rich_docx(), "docx")
    assert result.title == "Staff Handbook"
    assert result.text == (
        "# Staff Handbook\n\n"
        "Welcome to the company.\n\n"
        "## Leave\n\n"
        "### Sick days\n\n"
        "Ten paid sick days a year.\n\n"
        "- Tell your manager before 10:00.\n- Send a note after three days.\n\n"
        "First line\nsecond line\n\n"
        "Office | City | Hours\nHQ | Lyon | 9-17\nLab | Oslo, 8-16\n\n"
        "## Expenses\n\n"
        "Keep every receipt."
    )


def test_extract_docx_without_title_style_uses_heading_levels_as_is() -> None:
    result = extract(docx_bytes("Memo", ["First.", "Second."]), "docx")
    assert (result.title, result.text) == ("Memo", "# Memo\n\nFirst.\n\nSecond.")


def test_extract_corrupt_docx_is_refused() -> None:
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("word/document.xml", "<w:document>")
    for data in (broken.getvalue(), rich_docx()[:2000]):
        error = refused(data, "docx")
        assert str(error).startswith("corrupt DOCX") and error.__cause__ is not None


# --- CSV, TSV, XLSX -------------------------------------------------------------------


def test_extract_csv_rows_and_searchable_text() -> None:
    data = csv_text(
        [
            ["sku", "name", "", "sku", "zip"],
            ["A-1", "Lamp", 12.5, 3, "01234"],
            ["B-2", "Desk", "", -4, "75001"],
        ]
    )
    result = extract(data.encode(), "csv")
    (table,) = result.tables
    assert table.sheet == ""
    assert table.columns == ["sku", "name", "column_3", "sku_2", "zip"]
    assert table.rows == [
        {"sku": "A-1", "name": "Lamp", "column_3": 12.5, "sku_2": 3, "zip": "01234"},
        {"sku": "B-2", "name": "Desk", "column_3": None, "sku_2": -4, "zip": 75001},
    ]
    assert result.text == (
        "Columns: sku, name, column_3, sku_2, zip\n\n"
        "sku: A-1 | name: Lamp | column_3: 12.5 | sku_2: 3 | zip: 01234\n"
        "sku: B-2 | name: Desk | sku_2: -4 | zip: 75001"
    )


def test_extract_csv_sniffs_an_odd_dialect() -> None:
    data = (
        "produit;prix;remarque\r\n"
        "'Lampe; grande';12,5;'dit ''oui'''\r\n"
        "Bureau;300;\r\n"
        "'Chaise\r\npliante';45;'x'\r\n"
    ).encode("cp1252")
    (table,) = extract(data, "csv").tables
    assert table.columns == ["produit", "prix", "remarque"]
    assert table.rows == [
        {"produit": "Lampe; grande", "prix": "12,5", "remarque": "dit 'oui'"},
        {"produit": "Bureau", "prix": 300, "remarque": None},
        {"produit": "Chaise\npliante", "prix": 45, "remarque": "x"},
    ]


def test_extract_tsv_ragged_rows_get_named_columns() -> None:
    data = b"city\tdesks\nLyon\t40\textra\n\n\nOslo\n"
    (table,) = extract(data, "tsv").tables
    assert table.columns == ["city", "desks", "column_3"]
    assert table.rows == [
        {"city": "Lyon", "desks": 40, "column_3": "extra"},
        {"city": "Oslo", "desks": None, "column_3": None},
    ]


def test_extract_csv_binary_junk_is_refused() -> None:
    refused(b"a,b\n1,\x00\x00\x00\n", "csv")


def test_extract_xlsx_reads_every_sheet_with_typed_values() -> None:
    result = extract(typed_xlsx(), "xlsx")
    people, offices = result.tables
    assert people.sheet == "People"
    assert people.columns == ["Name", "Start", "Salary", "Remote", "column_5", "Name_2"]
    assert people.rows[0] == {
        "Name": "Ada", "Start": "2021-03-01", "Salary": 5200, "Remote": True,
        "column_5": "note", "Name_2": "Lovelace",
    }  # fmt: skip
    assert people.rows[1]["Start"] == "2022-07-15T09:30:00"
    assert people.rows[1]["Salary"] == 4800.5
    # the formula was never computed by a spreadsheet program: no cached value
    assert people.rows[2] == {
        "Name": "Grace", "Start": "2020-01-02", "Salary": None, "Remote": None,
        "column_5": None, "Name_2": "Hopper",
    }  # fmt: skip
    assert len(people.rows) == 3  # the blank row is skipped, the empty sheet gives no table
    assert offices.columns == ["City", "Desks", "column_3"]
    json.dumps([t.rows for t in result.tables])
    assert "# People\n\nColumns: Name, Start, Salary, Remote, column_5, Name_2\n\n" in result.text
    assert "# Offices\n\nColumns: City, Desks, column_3\n\nCity: Lyon | Desks: 40\n" in result.text
    assert (
        "Name: Linus | Start: 2022-07-15T09:30:00 | Salary: 4800.5 | Remote: false" in result.text
    )
    pieces = chunk_document(result.text, size=120, overlap=0)
    assert {p.heading for p in pieces} == {"People", "Offices"}


def test_extract_large_table_text_is_bounded_but_rows_are_complete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tabular, "MAX_TEXT_ROWS", 10)
    rows: list[list[object]] = [["n", "square"]] + [[i, i * i] for i in range(25)]
    result = extract(xlsx_bytes({"Numbers": rows}), "xlsx")
    assert len(result.tables[0].rows) == 25
    lines = result.text.split("\n")
    assert lines[-1] == "... 15 more rows not shown here (all rows are stored as table rows)"
    assert "n: 9 | square: 81" in lines and "n: 10 | square: 100" not in lines


def test_extract_corrupt_xlsx_is_refused() -> None:
    error = refused(b"PK\x03\x04" + bytes(200), "xlsx")
    assert str(error).startswith("corrupt XLSX") and error.__cause__ is not None


# --- the shipped sample folder --------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_cover_every_format_and_extract_with_titles() -> None:
    files = sorted((EXAMPLES / "docs").iterdir())
    assert {f.suffix for f in files} >= {".md", ".txt", ".html", ".pdf", ".docx", ".csv", ".xlsx"}
    assert sum(f.stat().st_size for f in files) < 300_000
    for path in files:
        result = extract(path.read_bytes(), path.suffix)
        assert len(result.text) > 500, path.name
        assert chunk_document(result.text), path.name
    datasheet = extract((EXAMPLES / "docs" / "kestrel-datasheet.pdf").read_bytes(), "pdf")
    assert datasheet.title == "Kestrel K2 Technical Datasheet"
    assert "Temperature: accuracy ±0.3 °C between 10 °C and 35 °C." in datasheet.text
    contacts = extract((EXAMPLES / "docs" / "support-contacts.xlsx").read_bytes(), "xlsx")
    assert [t.sheet for t in contacts.tables] == ["Regions", "Escalation", "Holidays 2025"]
    assert contacts.tables[2].rows[0] == {
        "Date": "2025-05-01", "Region": "France", "Holiday": "Labour Day", "Support open": False,
    }  # fmt: skip


def test_examples_committed_binaries_match_their_generator() -> None:
    generator = load_example_generator()
    builders = {
        "kestrel-datasheet.pdf": generator.datasheet_pdf,
        "security-policy.docx": generator.security_policy_docx,
        "support-contacts.xlsx": generator.support_contacts_xlsx,
    }
    for name, build in builders.items():
        committed, fresh = (EXAMPLES / "docs" / name).read_bytes(), build()
        assert archive_content(fresh) == archive_content(committed), f"re-run make_examples: {name}"


def archive_content(data: bytes) -> object:
    """ZIP members and their bytes (deflate output may differ between zlib builds)."""
    if not data.startswith(b"PK"):
        return data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}
