"""OCR: the text of PNG, JPEG and WebP images, and of the images on scanned PDF pages.

The engine is tesseract (Debian's ``tesseract-ocr`` with ``tesseract-ocr-eng``), run as a
child process per image on one thread (``OMP_THREAD_LIMIT=1``: the extraction workers are
the parallelism). docs/ocr.md gives the measurements it was chosen on (``bench/ocr.py``).

Bounds, so that a hostile image costs one file and never the run:

* the image's size is read from its header before any pixel is decoded: more than
  ``limits.ocr_max_pixels`` (``RAG_OCR_MAX_PIXELS``) is refused with ``LimitExceeded``; a PDF
  page's images are measured from their declared ``/Width`` and ``/Height`` the same way;
* decoding runs in the extraction worker, under its address-space limit
  (``RAG_WORKER_MEMORY_BYTES``), and tesseract inherits that limit (``RLIMIT_AS`` passes to
  children); a truncated or corrupt image is an ``ExtractionError``;
* tesseract gets at most ``RAG_FILE_TIMEOUT_SECONDS``; the worker's own timeout bounds the
  whole file.

With ``limits.ocr_enabled`` off an image is refused with a reason that says so, and a PDF
page without a text layer stays empty, as it does when it holds no image either.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess  # nosec B404
from collections.abc import Iterator
from typing import Any

from PIL import Image, UnidentifiedImageError

from ragkeeper_knowledge.extraction.model import (
    Extracted,
    ExtractionError,
    ExtractionLimits,
    LimitExceeded,
    Page,
    one_line,
)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({"png", "jpg", "jpeg", "webp"})
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
"""What Pillow must find in an image file: its content, not its name, decides."""
MIN_SIDE = 32
"""Images on a PDF page with a side shorter than this are decoration, not text."""
TESSERACT = "tesseract"
LANGUAGE = "eng"
OCR_OFF = "image not indexed: OCR is off (RAG_OCR_ENABLED=false)"
NOT_INSTALLED = (
    "OCR unavailable: the tesseract program is not installed "
    "(apt-get install tesseract-ocr tesseract-ocr-eng, or RAG_OCR_ENABLED=false)"
)


def extract_image(data: bytes, limits: ExtractionLimits) -> Extracted:
    """The text recognised in one image file; the whole text is its one cited part."""
    if not limits.ocr_enabled:
        raise ExtractionError(OCR_OFF)
    text = recognise(open_image(data, limits), limits)
    pages = (Page(None, 0, len(text), ocr=True),) if text else ()
    return Extracted(text=text, title=None, tables=[], pages=pages)


def open_image(data: bytes, limits: ExtractionLimits) -> Image.Image:
    """Decode an image after checking its declared size; raises on a bomb or broken file."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise LimitExceeded.of(
            "image too large to open", "RAG_OCR_MAX_PIXELS", limits.ocr_max_pixels
        ) from exc
    except UnidentifiedImageError as exc:
        raise ExtractionError("unreadable image: not a PNG, JPEG or WebP image") from exc
    if image.format not in IMAGE_FORMATS:
        raise ExtractionError(f"unsupported image format: {image.format}")
    check_pixels(image.width, image.height, limits)
    if image.format == "JPEG":
        image.draft("L", image.size)  # decode straight to grey: a third of the memory
    image.load()
    return image


def check_pixels(width: int, height: int, limits: ExtractionLimits) -> None:
    if width * height > limits.ocr_max_pixels:
        raise LimitExceeded.of(
            f"image of {width}x{height} pixels", "RAG_OCR_MAX_PIXELS", limits.ocr_max_pixels
        )


def recognise(image: Image.Image, limits: ExtractionLimits) -> str:
    """The text tesseract reads in ``image``: paragraphs separated by blank lines."""
    program = shutil.which(TESSERACT)
    if program is None:
        raise ExtractionError(NOT_INSTALLED)
    png = io.BytesIO()
    _grey(image).save(png, format="PNG", compress_level=1)
    try:  # tesseract, found on PATH, with a fixed argument list and no shell
        done = subprocess.run(  # nosec B603
            [program, "-", "stdout", "-l", LANGUAGE, "--psm", "3"],
            input=png.getvalue(),
            capture_output=True,
            timeout=limits.file_timeout_seconds,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LimitExceeded.of(
            "OCR took too long", "RAG_FILE_TIMEOUT_SECONDS", limits.file_timeout_seconds
        ) from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = detail[-1] if detail else "no message"
        raise ExtractionError(f"OCR failed: tesseract exited with {done.returncode}: {reason}")
    return tidy(done.stdout.decode("utf-8", "replace"))


def _grey(image: Image.Image) -> Image.Image:
    """8-bit grey; transparent pixels become white paper (text on a transparent PNG)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("L")
    return image if image.mode == "L" else image.convert("L")


def tidy(text: str) -> str:
    """tesseract's output without form feeds, trailing spaces and runs of blank lines."""
    lines = [line.rstrip() for line in text.replace("\x0c", "\n").splitlines()]
    paragraphs: list[str] = []
    current: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append("\n".join(current))
            current = []
    return "\n\n".join(paragraphs)


def ocr_pdf_page(page: Any, limits: ExtractionLimits) -> str:
    """The text of the images on a PDF page without a text layer, in the page's order."""
    sizes = list(_declared_image_sizes(page))
    for width, height in sizes:
        check_pixels(width, height, limits)
    if not any(min(size) >= MIN_SIDE for size in sizes):
        return ""
    texts = []
    for image in _page_images(page):
        if min(image.size) >= MIN_SIDE:
            check_pixels(image.width, image.height, limits)
            text = recognise(image, limits)
            if text:
                texts.append(text)
    return "\n\n".join(texts)


def _declared_image_sizes(page: Any) -> Iterator[tuple[int, int]]:
    """``/Width`` x ``/Height`` of the page's image XObjects, read before any is decoded."""
    resources = page.get("/Resources")
    xobjects = resources.get_object().get("/XObject") if resources is not None else None
    if xobjects is None:
        return
    for value in xobjects.get_object().values():
        xobject = value.get_object()
        if xobject.get("/Subtype") == "/Image":
            yield int(xobject.get("/Width", 0)), int(xobject.get("/Height", 0))


def _page_images(page: Any) -> Iterator[Image.Image]:
    for found in page.images:
        try:
            image = found.image
        except Exception as exc:  # one undecodable image must not lose the page's others
            log.warning("skipped an undecodable image on a PDF page: %s", one_line(exc))
            continue
        if image is not None:
            yield image
