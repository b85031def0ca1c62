"""Builders for test corpora: real files in every supported format, made in code."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

WORDS = [
    "policy",
    "refund",
    "invoice",
    "shipping",
    "warranty",
    "laptop",
    "battery",
    "customer",
    "account",
    "password",
    "holiday",
    "payroll",
    "onboarding",
    "security",
    "backup",
    "server",
    "network",
    "printer",
    "license",
    "contract",
    "budget",
    "travel",
    "expense",
    "meeting",
    "deadline",
    "project",
    "release",
    "feature",
    "support",
    "ticket",
]


def paragraph(rng: random.Random, n: int = 60) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def markdown_doc(rng: random.Random, sections: int = 4, paras: int = 3) -> str:
    out = [f"# {rng.choice(WORDS).title()} handbook"]
    for s in range(sections):
        out.append(f"## Section {s + 1}: {rng.choice(WORDS)}")
        out.extend(paragraph(rng) for _ in range(paras))
    return "\n\n".join(out) + "\n"


def pdf_bytes(lines: list[str]) -> bytes:
    """A minimal, valid one-page PDF with a text layer (no external tools)."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    stream = "BT /F1 11 Tf 50 780 Td 14 TL " + " ".join(f"({esc(t)}) '" for t in lines) + " ET"
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1"))
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def _wrap(text: str, font: Any, width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if font.getlength(candidate) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    return [*lines, line] if line else lines


def render(paragraphs: list[str], *, width: int, size: int, margin: int = 60) -> Image.Image:
    """Black text on a white page, paragraphs separated by a blank line."""
    font = ImageFont.load_default(size=size)  # bundled with Pillow: no font files
    lines: list[str] = []
    for paragraph in paragraphs:
        lines += [*_wrap(paragraph, font, width - 2 * margin), ""]
    step = int(size * 1.5)
    image = Image.new("L", (width, 2 * margin + step * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((margin, margin + number * step), line, fill=0, font=font)
    return image


def image_bytes(paragraphs: list[str], fmt: str = "PNG", *, width: int = 1400) -> bytes:
    """Rendered text as an image file (PNG, JPEG, WEBP), as a scan or screenshot holds it."""
    out = io.BytesIO()
    image = render(paragraphs, width=width, size=32)
    image.save(out, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return out.getvalue()


def scanned_pdf_bytes(paragraphs: list[str]) -> bytes:
    """A one-page PDF whose page is only an image of the text (no text layer)."""
    out = io.BytesIO()
    render(paragraphs, width=1400, size=32).convert("RGB").save(out, format="PDF", resolution=200.0)
    return out.getvalue()


def docx_bytes(title: str, paras: list[str]) -> bytes:
    import docx

    d = docx.Document()
    d.add_heading(title, level=1)
    for p in paras:
        d.add_paragraph(p)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def xlsx_bytes(sheets: dict[str, list[list[object]]]) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for r in rows:
            ws.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def csv_text(rows: list[list[object]]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def write_mixed_corpus(root: Path, n: int, seed: int = 7) -> list[Path]:
    """``n`` files cycling through md, txt, html, pdf, docx, csv, xlsx."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        kind = ("md", "txt", "html", "pdf", "docx", "csv", "xlsx")[i % 7]
        sub = root / f"dir{i % 5}"
        sub.mkdir(exist_ok=True)
        p = sub / f"doc{i:05d}.{kind}"
        if kind == "md":
            p.write_text(markdown_doc(rng))
        elif kind == "txt":
            p.write_text("\n\n".join(paragraph(rng) for _ in range(4)))
        elif kind == "html":
            body = "".join(f"<p>{paragraph(rng)}</p>" for _ in range(3))
            p.write_text(
                f"<html><head><title>Page {i}</title></head><body><h1>Page {i}</h1>{body}</body></html>"
            )
        elif kind == "pdf":
            p.write_bytes(pdf_bytes([paragraph(rng, 10) for _ in range(8)]))
        elif kind == "docx":
            p.write_bytes(docx_bytes(f"Memo {i}", [paragraph(rng) for _ in range(3)]))
        elif kind == "csv":
            p.write_text(
                csv_text(
                    [["sku", "name", "price"]]
                    + [[f"SKU-{i}-{j}", rng.choice(WORDS), j * 1.5] for j in range(5)]
                )
            )
        else:
            p.write_bytes(
                xlsx_bytes(
                    {
                        "Q1": [["region", "sales"], ["north", i], ["south", i * 2]],
                        "Q2": [["region", "sales"], ["east", 3]],
                    }
                )
            )
        paths.append(p)
    return paths
