"""Write the binary sample documents of ``examples/docs`` (PDF, DOCX, XLSX).

Run from the repository root: ``uv run python examples/make_examples.py``.

``make run`` ingests ``examples/docs``: a small fictional company, Pebblestone
Labs, and its Kestrel thermostat, described across every supported format so
the agent can answer questions from them. The Markdown, text, HTML and CSV
files are written by hand; this script makes the three binary ones from the
content below, and the outputs are committed.

The outputs are reproducible byte for byte (fixed document dates, fixed ZIP
entry times), so re-running the script changes nothing unless the content here
changed, and a re-ingest embeds nothing new.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import textwrap
import zipfile
from pathlib import Path

import docx
import openpyxl
from openpyxl.styles import Font

DOCS = Path(__file__).resolve().parent / "docs"
FIXED_TIME = dt.datetime(2025, 1, 15, 9, 0, 0)
AUTHOR = "Pebblestone Labs"

# --- PDF: the datasheet --------------------------------------------------------------

DATASHEET_TITLE = "Kestrel K2 Technical Datasheet"
DATASHEET: list[tuple[str, str]] = [
    ("title", DATASHEET_TITLE),
    ("text", "Pebblestone Labs - document KST-DS-002, revision C, January 2025"),
    ("heading", "Overview"),
    (
        "text",
        "The Kestrel K2 is a learning smart thermostat for 24 V low-voltage heating and "
        "cooling systems. It combines a rotating dial with a 2.1-inch round colour display, "
        "an occupancy sensor and a light ring that shows the current mode.",
    ),
    ("heading", "Physical"),
    ("text", "Dimensions: 84 × 84 × 24 mm (display unit on wall plate)."),
    ("text", "Weight: 120 g. Housing: recycled polycarbonate, white or black."),
    ("text", "Display: 2.1-inch round IPS, 480 x 480 pixels, ambient light sensor."),
    ("heading", "Electrical"),
    (
        "text",
        "Supply: 24 V AC (18 to 30 V AC), 50/60 Hz, through the C and R wires, or the "
        "PA-24 power adapter when no C wire is available.",
    ),
    ("text", "Power consumption: 1.2 W typical, 3 W maximum."),
    ("text", "Terminals: R, Rc, C, W1, W2/AUX, Y1, Y2, G, O/B. Relay rating 1 A per terminal."),
    ("text", "Not compatible with 120 V or 240 V line-voltage systems."),
    ("heading", "Sensors"),
    ("text", "Temperature: accuracy ±0.3 °C between 10 °C and 35 °C."),
    ("text", "Humidity: accuracy ±3 % relative humidity."),
    (
        "text",
        "Occupancy: passive infrared, range 5 m, 120° field of view. No camera, no microphone.",
    ),
    ("page", ""),
    ("heading", "Connectivity"),
    ("text", "Wi-Fi 802.11 b/g/n, 2.4 GHz only, WPA2 and WPA3 personal."),
    (
        "text",
        "Thread 1.3 border router and Matter 1.2 certified: works with Apple Home, Google "
        "Home and Amazon Alexa.",
    ),
    ("text", "Bluetooth Low Energy 5.2 for setup and for up to six RS1 room sensors."),
    ("text", "Firmware updates over the air, signed and verified at boot."),
    ("heading", "Environment"),
    ("text", "Operating temperature: 0 °C to 40 °C. Storage: –20 °C to 60 °C."),
    ("text", "Humidity: 10 to 90 % relative humidity, non-condensing."),
    ("heading", "Compliance and warranty"),
    ("text", "CE, UKCA, FCC Part 15, RoHS and REACH. Designed in Lyon, assembled in Tallinn."),
    ("text", "Warranty: 2 years, extended to 5 years when registered in the app within 60 days."),
]

_FONTS = {"title": ("F2", 18), "heading": ("F2", 13), "text": ("F1", 10.5)}
_PAGE_WIDTH, _PAGE_HEIGHT, _MARGIN = 595, 842, 56


def datasheet_pdf() -> bytes:
    """A two-page PDF with a text layer, Helvetica in WinAnsi encoding, and an info title."""
    pages: list[list[tuple[str, float, str]]] = [[]]
    for kind, content in DATASHEET:
        if kind == "page":
            pages.append([])
            continue
        font, size = _FONTS[kind]
        for line in textwrap.wrap(content, 95 if kind == "text" else 70):
            pages[-1].append((font, size, line))
    return _pdf([_page_stream(lines) for lines in pages], DATASHEET_TITLE)


def _page_stream(lines: list[tuple[str, float, str]]) -> bytes:
    ops = [f"BT {_MARGIN} {_PAGE_HEIGHT - _MARGIN} Td"]
    for font, size, text in lines:
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops.append(f"/{font} {size} Tf {size * 1.6:.1f} TL T* ({escaped}) Tj")
    ops.append("ET")
    return "\n".join(ops).encode("cp1252")


def _pdf(streams: list[bytes], title: str) -> bytes:
    count = len(streams)
    first_page = 5
    kids = " ".join(f"{first_page + 2 * i} 0 R" for i in range(count))
    date = FIXED_TIME.strftime("D:%Y%m%d%H%M%S")
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
    ]
    for i, stream in enumerate(streams):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_PAGE_WIDTH} {_PAGE_HEIGHT}] "
            f"/Contents {first_page + 2 * i + 1} 0 R "
            "/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    info = len(objects) + 1
    dates = f"/CreationDate ({date}) /ModDate ({date})"
    objects.append(f"<< /Title ({title}) /Author ({AUTHOR}) {dates} >>".encode())
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.writelines(b"%010d 00000 n \n" % offset for offset in offsets)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
        % (len(objects) + 1, info, xref)
    )
    return out.getvalue()


# --- DOCX: the security policy -------------------------------------------------------

POLICY_TITLE = "Information Security Policy"
CLASSIFICATION = [
    ("Level", "Examples", "Handling"),
    ("Public", "Website, datasheets, price list", "No restrictions"),
    ("Internal", "Handbook, roadmaps, meeting notes", "Employees and contractors only"),
    (
        "Confidential",
        "Customer data, contracts, salaries",
        "Need-to-know; encrypted at rest and in transit",
    ),
    (
        "Restricted",
        "Firmware signing keys, production secrets",
        "Named people only; hardware security module",
    ),
]


def security_policy_docx() -> bytes:
    """Title, numbered sections as headings, bullet lists and a classification table."""
    document = docx.Document()
    document.add_paragraph(POLICY_TITLE, style="Title")
    document.add_paragraph(
        "Owner: Chief Information Security Officer (security@pebblestone.example). Applies to "
        "every employee, contractor and intern of Pebblestone Labs. Version 3.1, January 2025."
    )
    document.add_heading("Passwords and accounts", level=1)
    document.add_paragraph(
        "Use the company password manager for every work account. Passwords are at least 14 "
        "characters long and unique per service. Multi-factor authentication with a hardware "
        "key is mandatory for email, source code, the cloud console and the HR portal."
    )
    for rule in (
        "Never share an account; ask IT for a shared vault entry instead.",
        "Change a password immediately if you suspect it leaked.",
        "Accounts are disabled on the last working day of an employee.",
    ):
        document.add_paragraph(rule, style="List Bullet")
    document.add_heading("Devices", level=1)
    document.add_paragraph(
        "Company laptops use full-disk encryption, lock after 5 minutes of inactivity and "
        "install security updates within 7 days. Personal devices may access email and chat "
        "only, through the managed apps."
    )
    document.add_heading("Lost or stolen devices", level=2)
    document.add_paragraph(
        "Report a lost or stolen laptop, phone or security key to the IT helpdesk "
        "(it@pebblestone.example, +33 4 72 00 12 34) within 24 hours, even outside working "
        "hours. IT wipes the device remotely and issues a replacement."
    )
    document.add_heading("Data classification", level=1)
    document.add_paragraph("Every document and dataset belongs to one of four levels:")
    table = document.add_table(rows=0, cols=3)
    for values in CLASSIFICATION:
        cells = table.add_row().cells
        for cell, value in zip(cells, values, strict=True):
            cell.text = value
    document.add_paragraph(
        "Kestrel customer telemetry is Confidential. It is stored in the EU (Frankfurt) and "
        "deleted 24 months after collection."
    )
    document.add_heading("Incident reporting", level=1)
    document.add_paragraph(
        "Report any suspected security incident, phishing email or data leak to "
        "security@pebblestone.example or the on-call number +33 4 72 00 99 99. The security "
        "team acknowledges within 1 hour and informs customers and authorities within 72 hours "
        "when personal data is affected."
    )
    document.add_heading("Vulnerability disclosure", level=2)
    document.add_paragraph(
        "External researchers report vulnerabilities to security@pebblestone.example. We reply "
        "within 3 business days and do not take legal action against good-faith research."
    )
    properties = document.core_properties
    properties.title = POLICY_TITLE
    properties.author = properties.last_modified_by = AUTHOR
    properties.created = properties.modified = FIXED_TIME
    properties.revision = 1
    out = io.BytesIO()
    document.save(out)
    return _stable_zip(out.getvalue())


# --- XLSX: the support contacts ------------------------------------------------------

SUPPORT_SHEETS: dict[str, list[list[object]]] = {
    "Regions": [
        ["Region", "Email", "Phone", "Hours (local)", "Languages"],
        [
            "France",
            "support.fr@pebblestone.example",
            "+33 4 72 00 12 00",
            "Mon-Fri 08:00-19:00",
            "French, English",
        ],
        [
            "Nordics",
            "support.no@pebblestone.example",
            "+47 21 00 45 00",
            "Mon-Fri 08:00-17:00",
            "Norwegian, Swedish, Danish, English",
        ],
        [
            "Germany and Austria",
            "support.de@pebblestone.example",
            "+49 30 5555 0100",
            "Mon-Sat 08:00-18:00",
            "German, English",
        ],
        [
            "United Kingdom",
            "support.uk@pebblestone.example",
            "+44 20 7946 0500",
            "Mon-Fri 09:00-17:30",
            "English",
        ],
        [
            "Rest of Europe",
            "support@pebblestone.example",
            None,
            "Email only, 1 business day",
            "English",
        ],
    ],
    "Escalation": [
        ["Level", "Team", "When", "First response (hours)", "Contact"],
        [1, "Customer support", "Every new ticket", 24, "Regional support line"],
        [
            2,
            "Product specialists",
            "Wiring faults, repeated offline devices",
            8,
            "Assigned by level 1",
        ],
        [
            3,
            "Firmware engineering",
            "Suspected firmware bug affecting many homes",
            4,
            "firmware-oncall@pebblestone.example",
        ],
        [
            4,
            "Security team",
            "Suspected breach or vulnerability",
            1,
            "security@pebblestone.example",
        ],
    ],
    "Holidays 2025": [
        ["Date", "Region", "Holiday", "Support open"],
        [dt.date(2025, 5, 1), "France", "Labour Day", False],
        [dt.date(2025, 5, 17), "Nordics", "Constitution Day (Norway)", False],
        [dt.date(2025, 7, 14), "France", "Bastille Day", False],
        [dt.date(2025, 10, 3), "Germany and Austria", "German Unity Day", True],
        [dt.date(2025, 12, 25), "All regions", "Christmas Day", False],
    ],
}


def support_contacts_xlsx() -> bytes:
    """Three sheets with typed cells (numbers, dates, booleans) and bold headers."""
    workbook = openpyxl.Workbook()
    default = workbook.active
    if default is not None:
        workbook.remove(default)
    for name, rows in SUPPORT_SHEETS.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for column in ("A", "B", "C", "D", "E"):
            sheet.column_dimensions[column].width = 28
    workbook.properties.title = "Support contacts"
    workbook.properties.creator = AUTHOR
    workbook.properties.created = FIXED_TIME
    out = io.BytesIO()
    workbook.save(out)
    return _stable_zip(out.getvalue())


# --- reproducible archives -----------------------------------------------------------

_CORE_DATES = re.compile(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)")


def _stable_zip(data: bytes) -> bytes:
    """The same archive with fixed entry times and fixed core-property dates."""
    stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            content = source.read(entry)
            if entry.filename == "docProps/core.xml":
                content = _CORE_DATES.sub(rb"\g<1>" + stamp + rb"\g<2>", content)
            info = zipfile.ZipInfo(entry.filename, date_time=(2025, 1, 15, 9, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(info, content)
    return out.getvalue()


def main() -> None:
    outputs = {
        "kestrel-datasheet.pdf": datasheet_pdf(),
        "security-policy.docx": security_policy_docx(),
        "support-contacts.xlsx": support_contacts_xlsx(),
    }
    for name, data in outputs.items():
        path = DOCS / name
        changed = not path.exists() or path.read_bytes() != data
        if changed:
            path.write_bytes(data)
        status = "written" if changed else "unchanged"
        print(f"{path.relative_to(DOCS.parent.parent)}: {len(data)} bytes, {status}")  # noqa: T201 - CLI result line


if __name__ == "__main__":
    main()
