"""OCR engines side by side: character error rate, seconds and peak RSS per image.

Run::

    uv run --frozen --group bench python -m bench.ocr            # every engine installed
    uv run --frozen --group bench python -m bench.ocr --engine tesseract --repeat 3
    # rapidocr from a scratch environment (it is not a dependency of the project):
    uv venv /tmp/ocr && uv pip install -p /tmp/ocr/bin/python rapidocr-onnxruntime
    uv run --frozen --group bench python -m bench.ocr --rapidocr-python /tmp/ocr/bin/python

Engines: ``tesseract`` (Debian's ``tesseract-ocr`` + ``tesseract-ocr-eng``, run as a process
per image, as the ingestion job runs it) and ``rapidocr`` (the ``rapidocr-onnxruntime`` wheel,
PP-OCRv4 ONNX models inside it; not a dependency of the project: install it into a
scratch environment to compare, as above; ``--rapidocr-python`` names that interpreter).
An engine that is not installed is listed as such. Both run on one thread
(``OMP_THREAD_LIMIT=1``, ``intra_op_num_threads=1``): the job's extraction workers are the
parallelism.

The test images are generated here with Pillow and its bundled font (no files, no download):

* ``clean``: a paragraph rendered black on white at ~200 dpi scan size;
* ``photo``: the same text photographed: rotated 2 degrees, blurred, grey paper, noise,
  saved as a JPEG at quality 55;
* ``small``: a screenshot-sized 15 px font;
* ``two-column``: a page of two columns, read column after column;
* ``scanned-pdf``: the ``clean`` image as the only content of a PDF page, as the job reads it
  (``ragkeeper_knowledge.extraction.extract``; tesseract only).

Then the cost of OCR beside the other formats: extract + chunk (``workers.extract_and_chunk``,
what an extraction worker runs) of about one page in each format, best of ``--repeat``
(at least 3), in milliseconds and as a multiple of a text PDF page's. Last, full-size pages
(an A4 scan at 300 dpi as PNG and as a scanned PDF, a 39-megapixel photo) through ``extract``
in a fresh process under the worker's 512 MiB address-space limit: seconds and peak RSS.

Character error rate (CER) is the edit distance between the engine's text and the rendered
text (whitespace collapsed, case kept) over the rendered text's length: 0 is perfect. The
peak RSS is the engine process's maximum resident set (``wait4``): a tesseract process per
image; for rapidocr the Python process holding the models, after each image. Nothing here
gates CI.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.rag.corpus import (  # noqa: E402
    docx_bytes,
    image_bytes,
    markdown_doc,
    paragraph,
    pdf_bytes,
    render,
    scanned_pdf_bytes,
    xlsx_bytes,
)

PARAGRAPHS = [
    "Employees may carry over up to five unused vacation days into the next calendar year. "
    "Requests must be approved by the team lead before the first of December.",
    "The backup policy keeps nightly snapshots for 35 days and monthly archives for seven "
    "years. Restores are tested every quarter on a separate cluster.",
    "Invoices above 10,000 EUR need a second signature from the finance department; "
    "payment terms are net 30 days unless the contract says otherwise.",
    "Visitors sign in at the front desk, wear a badge at all times and are escorted "
    "in the laboratory areas, where safety glasses are mandatory.",
]


def photographed(image: Image.Image, seed: int = 7) -> Image.Image:
    """Skewed, blurred, grey, noisy: a phone photo of a printed page (the same every run)."""
    skewed = image.rotate(2.0, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    grey = skewed.filter(ImageFilter.GaussianBlur(1.1)).point(lambda v: 40 + int(v * 0.72))
    noise = Image.frombytes("L", grey.size, random.Random(seed).randbytes(grey.width * grey.height))
    noisy = ImageChops.add(grey, noise.point(lambda v: v * 28 // 255), offset=-14)
    out = io.BytesIO()
    noisy.save(out, format="JPEG", quality=55)
    return Image.open(io.BytesIO(out.getvalue()))


def two_columns(left: list[str], right: list[str], *, size: int = 30) -> Image.Image:
    column_width = 850
    a = render(left, width=column_width, size=size)
    b = render(right, width=column_width, size=size)
    page = Image.new("L", (2 * column_width, max(a.height, b.height)), 255)
    page.paste(a, (0, 0))
    page.paste(b, (column_width, 0))
    return page


def samples(folder: Path) -> list[tuple[str, Path, str]]:
    """(name, file, expected text) for every generated test image."""
    text = " ".join(PARAGRAPHS)
    clean = render(PARAGRAPHS, width=1700, size=34)
    cases: list[tuple[str, Image.Image, str, str]] = [
        ("clean", clean, "png", text),
        ("photo", photographed(clean), "jpg", text),
        (
            "small",
            render(PARAGRAPHS[:2], width=900, size=15, margin=20),
            "png",
            " ".join(PARAGRAPHS[:2]),
        ),
        ("two-column", two_columns(PARAGRAPHS[:2], PARAGRAPHS[2:]), "webp", text),
    ]
    found = []
    for name, image, ext, expected in cases:
        path = folder / f"{name}.{ext}"
        image.save(path, **({"lossless": True} if ext == "webp" else {}))
        found.append((name, path, expected))
    pdf = folder / "scanned-pdf.pdf"
    clean.convert("RGB").save(pdf, format="PDF", resolution=200.0)
    found.append(("scanned-pdf", pdf, text))
    return found


def cer(got: str, expected: str) -> float:
    """Levenshtein distance / len(expected), whitespace collapsed."""
    a, b = " ".join(got.split()), " ".join(expected.split())
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != other))
            )
        previous = current
    return previous[-1] / max(1, len(b))


def _wait(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """The exit code and peak RSS (MiB) of a child that has not been waited for yet."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def tesseract(paths: list[Path]) -> list[dict[str, Any]]:
    results = []
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    for path in paths:
        started = time.perf_counter()
        if path.suffix == ".pdf":
            results.append(_job_extract(path, started))
            continue
        proc = subprocess.Popen(
            ["tesseract", str(path), "stdout", "--psm", "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdout is not None
        text = proc.stdout.read().decode()
        _, rss = _wait(proc)
        results.append({"text": text, "seconds": time.perf_counter() - started, "rss_mib": rss})
    return results


def _job_extract(path: Path, started: float) -> dict[str, Any]:
    """A scanned PDF through the job's own extraction (which runs tesseract per page)."""
    code = (
        "import json, resource, sys\n"
        "from ragkeeper_knowledge.extraction import extract\n"
        "text = extract(open(sys.argv[1], 'rb').read(), 'pdf').text\n"
        "print(json.dumps(text))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    exit_code, rss = _wait(proc)
    text = json.loads(out) if exit_code == 0 and out else ""
    return {"text": text, "seconds": time.perf_counter() - started, "rss_mib": rss, "whole": True}


RAPIDOCR_CHILD = """
import json, resource, sys, time
t = time.perf_counter()
from rapidocr_onnxruntime import RapidOCR
engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
print(json.dumps({"load": time.perf_counter() - t}), flush=True)
for path in sys.argv[1:]:
    t = time.perf_counter()
    result, _ = engine(path)
    text = " ".join(line[1] for line in result or [])
    seconds = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"text": text, "seconds": seconds, "rss_mib": rss}), flush=True)
"""


RAPIDOCR_PYTHON = [sys.executable]
LOADS: list[float] = []  # seconds rapidocr took to load its models, per run


def rapidocr(paths: list[Path]) -> list[dict[str, Any]]:
    images = [p for p in paths if p.suffix != ".pdf"]
    proc = subprocess.Popen(
        [RAPIDOCR_PYTHON[0], "-c", RAPIDOCR_CHILD, *map(str, images)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    lines = [json.loads(line) for line in proc.stdout.read().decode().splitlines()]
    _wait(proc)
    load = lines[0]["load"]
    LOADS.append(load)
    by_path = dict(zip(images, lines[1:], strict=False))
    return [
        by_path.get(p, {"text": "", "seconds": 0.0, "rss_mib": 0.0, "load": load}) for p in paths
    ]


def available(engine: str) -> bool:
    if engine == "tesseract":
        return shutil.which("tesseract") is not None
    probe = subprocess.run(
        [RAPIDOCR_PYTHON[0], "-c", "import rapidocr_onnxruntime"], capture_output=True, check=False
    )
    return probe.returncode == 0


ENGINES: dict[str, Callable[[list[Path]], list[dict[str, Any]]]] = {
    "tesseract": tesseract,
    "rapidocr": rapidocr,
}


def format_samples() -> dict[str, tuple[bytes, str]]:
    """About one page of text in each format the job reads: name -> (bytes, extension)."""
    rng = random.Random(7)
    lines = [paragraph(rng, 12) for _ in range(30)]
    page = [" ".join(lines[i : i + 5]) for i in range(0, 30, 5)]
    return {
        "md": (markdown_doc(rng, sections=3, paras=2).encode(), "md"),
        "pdf (text)": (pdf_bytes(lines), "pdf"),
        "docx": (docx_bytes("Memo", page), "docx"),
        "xlsx": (xlsx_bytes({"Q1": [["a", "b"], *[[i, i * 2] for i in range(200)]]}), "xlsx"),
        "png (OCR)": (image_bytes(PARAGRAPHS, width=1700), "png"),
        "jpeg (OCR)": (image_bytes(PARAGRAPHS, "JPEG", width=1700), "jpg"),
        "pdf (scan, OCR)": (scanned_pdf_bytes(PARAGRAPHS), "pdf"),
    }


def format_costs(repeat: int) -> None:
    """Extract-and-chunk seconds per file (one page each), as a worker runs it."""
    from ragkeeper_rag.workers import extract_and_chunk

    print("\nper format, one page each: extract + chunk in this process (what a worker runs)")
    print(f"{'format':<16} {'ms':>8} {'chunks':>7} {'x pdf':>8}")
    samples = format_samples()
    base = None
    for name in ["pdf (text)", *(n for n in samples if n != "pdf (text)")]:
        data, extension = samples[name]
        best = float("inf")
        for _ in range(max(1, repeat)):
            started = time.perf_counter()
            _, pieces = extract_and_chunk(data, extension, 1200, 150)
            best = min(best, time.perf_counter() - started)
        base = base or best
        print(f"{name:<16} {best * 1000:>8.1f} {len(pieces):>7} {best / base:>8.1f}")


WORKER_CHILD = """
import json, resource, sys, time
from ragkeeper_rag import workers  # what the fork server preloads into every worker
from ragkeeper_knowledge.extraction import extract
data = open(sys.argv[1], "rb").read()
resource.setrlimit(resource.RLIMIT_AS, (512 * 2**20, resource.RLIM_INFINITY))
started = time.perf_counter()
text = extract(data, sys.argv[1].rsplit(".", 1)[1]).text
status = open("/proc/self/status").read().split("VmHWM:")[1]
rss = int(status.split()[0]) / 1024  # this process's peak since exec (ru_maxrss keeps the parent's)
print(json.dumps({"seconds": time.perf_counter() - started, "rss_mib": rss, "chars": len(text)}))
"""


def full_pages(folder: Path) -> None:
    """Full-size scans through ``extract`` in a process limited like a worker (512 MiB)."""
    text = [" ".join(PARAGRAPHS)] * 12
    a4 = render(text, width=2480, size=42)  # 300 dpi A4 width, 10.5 pt text
    a4 = a4.crop((0, 0, 2480, 3508)) if a4.height >= 3508 else a4
    photo = render(text, width=7300, size=110).convert("RGB")
    cases = {"A4 300 dpi PNG": "a4.png", "A4 300 dpi PDF": "a4.pdf", "39 Mpx RGB photo": "p.png"}
    a4.save(folder / "a4.png")
    a4.convert("RGB").save(folder / "a4.pdf", resolution=300.0)
    photo.crop((0, 0, 7300, 5400)).save(folder / "p.png", compress_level=1)
    del photo
    print("\nfull pages: extract() in a fresh process under RLIMIT_AS=512 MiB, as a worker")
    print(f"{'page':<18} {'pixels':>11} {'s':>6} {'worker RSS MiB':>15} {'chars':>6}")
    for name, file in cases.items():
        out = subprocess.run(
            [sys.executable, "-c", WORKER_CHILD, str(folder / file)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout)
        size = a4.size if file != "p.png" else (7300, 5400)
        print(
            f"{name:<18} {size[0]}x{size[1]:<6} {result['seconds']:>6.2f} "
            f"{result['rss_mib']:>15.0f} {result['chars']:>6}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=sorted(ENGINES), action="append")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per image; the best time counts"
    )
    parser.add_argument("--rapidocr-python", help="interpreter with rapidocr-onnxruntime")
    args = parser.parse_args(argv)
    if args.rapidocr_python:
        RAPIDOCR_PYTHON[0] = args.rapidocr_python
    engines = args.engine or list(ENGINES)
    with tempfile.TemporaryDirectory(prefix="bench-ocr-") as tmp:
        cases = samples(Path(tmp))
        paths = [path for _, path, _ in cases]
        table: dict[str, list[dict[str, Any]] | None] = {}
        for engine in engines:
            if not available(engine):
                table[engine] = None
                continue
            runs = [ENGINES[engine](paths) for _ in range(max(1, args.repeat))]
            table[engine] = [
                dict(run[0], seconds=min(r["seconds"] for r in run))
                for run in zip(*runs, strict=True)
            ]
        _print(cases, table)
    if shutil.which("tesseract"):
        format_costs(max(3, args.repeat))
        with tempfile.TemporaryDirectory(prefix="bench-ocr-") as tmp:
            full_pages(Path(tmp))


def _print(
    cases: list[tuple[str, Path, str]], table: dict[str, list[dict[str, Any]] | None]
) -> None:
    header = f"{'image':<12} {'size':>11}"
    for engine in table:
        header += f" | {engine + ' CER':>14} {'s':>6} {'RSS MiB':>8}"
    print(header)
    for index, (name, path, expected) in enumerate(cases):
        if path.suffix == ".pdf":
            size = "1 page"
        else:
            with Image.open(path) as image:
                size = f"{image.width}x{image.height}"
        row = f"{name:<12} {size:>11}"
        for results in table.values():
            result = results[index] if results else None
            if result is None or (path.suffix == ".pdf" and not result.get("whole")):
                row += f" | {'-':>14} {'-':>6} {'-':>8}"
                continue
            error = cer(result["text"], expected)
            row += f" | {error:>14.3f} {result['seconds']:>6.2f} {result['rss_mib']:>8.0f}"
        print(row)
    for engine, results in table.items():
        if results is None:
            print(f"{engine}: not installed")
    if LOADS:
        print(f"rapidocr: {min(LOADS):.2f} s to load its models (not in the times above)")
    print("CER: edit distance / characters (0 = perfect); s: seconds per image, best of --repeat;")
    print("RSS: the engine process's peak (tesseract: its process; rapidocr: the Python process")
    print("with the models loaded); scanned-pdf: the job's extract() in a fresh Python process.")


if __name__ == "__main__":
    main()
