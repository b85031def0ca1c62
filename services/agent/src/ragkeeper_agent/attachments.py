"""Files attached to a chat message: checked, read into text, and given to the model.

A message's ``files`` (``schemas.FileAttachment``) go through :func:`read_attachments`:

* **Limits**: one file at most ``MAX_ATTACHMENT_BYTES``, all of a message's files together at
  most ``MAX_MESSAGE_ATTACHMENT_BYTES`` (413 naming the file or the total and the setting);
  at most ``schemas.MAX_FILES`` files (422, by the schema).
* **Formats**: what the ingestion job reads (``ragkeeper_knowledge.extraction``: PDF, DOCX,
  TXT, Markdown, HTML, CSV, TSV, XLSX) plus PNG, JPEG and WebP images, known by the file
  name's extension or else by the MIME type. Anything else is a 422 naming the file.
* **Reading**: documents are extracted by the shared extractors, in a thread (at most
  ``EXTRACT_CONCURRENCY`` files at once per replica), under ``ExtractionLimits`` fit for one
  chat turn: the text may not exceed MAX_PROMPT_CHARS. An image goes to the model as an image
  part when ``LLM_VISION`` is true; otherwise (and always offline) its text is read by OCR. A
  corrupt or unreadable file is a 422 naming it and the reason; a file whose text is over a
  cap is a 413. Nothing of the message is kept then: the user sends it again, fixed.

Each text section (a PDF page, an image, or a whole document) becomes a :class:`Passage`
numbered for citation like a search result, with the ``document_id`` ``attachment:<id>``
and the file name (and page) as its title. The passages of every file attached to the
conversation so far are given to the model at each turn (``agent.attachment_instructions``),
so a follow-up question can refer to them; the rows are kept in the ``attachments`` table
with the turn (``history.ConversationStore.save_turn``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import secrets
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic_ai.messages import BinaryContent

from ragkeeper_knowledge.extraction import (
    IMAGE_EXTENSIONS,
    MIME_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    ExtractionError,
    ExtractionLimits,
    LimitExceeded,
    Section,
    extract_file,
)

from .agent import Passage
from .errors import RequestTooLarge
from .metrics import ATTACHMENT_READ_DURATION, ATTACHMENTS
from .schemas import AttachmentOut, FileAttachment
from .settings import Settings

EXTRACT_CONCURRENCY = 1
"""Files extracted at once per replica. Extraction is CPU work (a thread, and tesseract for
images), and the chart gives the agent one CPU, so a second file at once would not finish
sooner; one at a time, an OCR'd image adds at most about 200 MiB to the agent's memory
(``bench/memory.py --agent``)."""
EXTRACT_TIMEOUT_SECONDS = 60.0
"""One file's OCR (tesseract's own timeout); a longer one is refused as too large to read."""
MAX_PAGES = 500
"""Pages of an attached PDF; past it the file is refused as too large to read."""
OCR_MAX_PIXELS = 20_000_000
"""Pixels of an attached image (or an image on a scanned page) that is OCR'd: a 12 MP phone
photo and an A4 page at 300 dpi (8.7 MP) fit; larger is refused as too large to read."""
ATTACHMENT_PREFIX = "attachment:"
"""The ``document_id`` of an attachment's passages: ``attachment:<id>``."""

_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _slot() -> asyncio.Semaphore:
    """This event loop's bound on files extracted at once (one loop per server)."""
    loop = asyncio.get_running_loop()
    slot = _slots.get(loop)
    if slot is None:
        slot = _slots[loop] = asyncio.Semaphore(EXTRACT_CONCURRENCY)
    return slot


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attached file: what is kept with the conversation and what the model gets."""

    id: str
    file_name: str
    mime_type: str
    size_bytes: int
    sha256: str
    sections: tuple[Section, ...] = ()
    image: bytes | None = field(default=None, repr=False)
    """The bytes, for an image sent to a vision model as an image part (not kept in the row;
    the image part is in the stored message)."""

    def summary(self) -> AttachmentOut:
        """The attachment as the API lists it (no text)."""
        return {
            "id": self.id,
            "file_name": self.file_name,
            "mime_type": self.mime_type,
            "size_bytes": self.size_bytes,
        }

    def as_row(self) -> dict[str, Any]:
        """The ``attachments`` row, as ``save_turn`` writes it."""
        return {**self.summary(), "sha256": self.sha256, "sections": self.sections_json()}

    def sections_json(self) -> list[dict[str, Any]]:
        """``{text, page, ocr}`` per section, as the ``sections`` column holds them."""
        return [dataclasses.asdict(s) for s in self.sections]

    def image_part(self) -> BinaryContent | None:
        return (
            None
            if self.image is None
            else BinaryContent(data=self.image, media_type=self.mime_type)
        )


def stored_attachment(row: Any) -> Attachment:
    """An ``attachments`` row (or a mapping of its columns) as an :class:`Attachment`."""
    return Attachment(
        id=row["id"],
        file_name=row["file_name"],
        mime_type=row["mime_type"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        sections=tuple(
            Section(s["text"], s.get("page"), bool(s.get("ocr"))) for s in row["sections"]
        ),
    )


def _refused(index: int, kind: str, message: str) -> RequestValidationError:
    """422 naming the refused file, in FastAPI's validation error shape."""
    return RequestValidationError(
        [{"type": kind, "loc": ("body", "files", index), "msg": message, "input": None}]
    )


def file_kind(file: FileAttachment) -> str | None:
    """The extractor's extension for ``file``: its name's, else its MIME type's; None when
    neither is supported."""
    name = file.file_name.rsplit(".", 1)
    if len(name) == 2 and name[1].lower() in SUPPORTED_EXTENSIONS:
        return name[1].lower()
    return MIME_EXTENSIONS.get(file.mime_type.split(";", 1)[0].strip().lower())


def check_sizes(files: Sequence[FileAttachment], settings: Settings) -> list[bytes]:
    """The files' bytes, once each is within MAX_ATTACHMENT_BYTES and all of them within
    MAX_MESSAGE_ATTACHMENT_BYTES (413 otherwise)."""
    contents = [f.data() for f in files]
    for f, data in zip(files, contents, strict=True):
        if len(data) > settings.max_attachment_bytes:
            raise RequestTooLarge(
                f"the attached file {f.file_name!r} is {len(data)} bytes, over the limit of "
                f"{settings.max_attachment_bytes} bytes per file (MAX_ATTACHMENT_BYTES)"
            )
    total = sum(len(data) for data in contents)
    if total > settings.max_message_attachment_bytes:
        raise RequestTooLarge(
            f"the attached files are {total} bytes together, over the limit of "
            f"{settings.max_message_attachment_bytes} bytes per message "
            "(MAX_MESSAGE_ATTACHMENT_BYTES)"
        )
    return contents


def extraction_limits(settings: Settings) -> ExtractionLimits:
    """The extractors' caps for one chat turn: no more text than a prompt may hold."""
    return ExtractionLimits(
        max_text_chars=settings.max_prompt_chars,
        max_pages=MAX_PAGES,
        file_timeout_seconds=EXTRACT_TIMEOUT_SECONDS,
        ocr_max_pixels=OCR_MAX_PIXELS,
    )


async def read_attachments(files: Sequence[FileAttachment], settings: Settings) -> list[Attachment]:
    """Check and read a message's files (see the module's docstring for every refusal)."""
    if not settings.attachments_enabled:
        raise _refused(0, "attachments_disabled", "attachments are off (ATTACHMENTS_ENABLED)")
    try:
        contents = check_sizes(files, settings)
    except RequestTooLarge:
        for f in files:
            ATTACHMENTS.labels(file_kind(f) or "other", "too_large").inc()
        raise
    kinds: list[str] = []
    for index, f in enumerate(files):
        kind = file_kind(f)
        if kind is None:
            ATTACHMENTS.labels("other", "unsupported").inc()
            supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
            raise _refused(
                index,
                "attachment_unsupported",
                f"{f.file_name!r} ({f.mime_type}) is not a supported format; "
                f"supported: {supported}",
            )
        kinds.append(kind)
    limits = extraction_limits(settings)
    return list(
        await asyncio.gather(
            *(
                _read(index, f, data, kind, limits, vision=settings.llm_vision)
                for index, (f, data, kind) in enumerate(zip(files, contents, kinds, strict=True))
            )
        )
    )


async def _read(
    index: int,
    file: FileAttachment,
    data: bytes,
    kind: str,
    limits: ExtractionLimits,
    *,
    vision: bool,
) -> Attachment:
    attachment = Attachment(
        id=f"att_{secrets.token_urlsafe(12)}",
        file_name=file.file_name,
        mime_type=_mime_type(file, kind),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    if vision and kind in IMAGE_EXTENSIONS:
        ATTACHMENTS.labels(kind, "image").inc()
        return dataclasses.replace(attachment, image=data)
    started = time.perf_counter()
    outcome = "unreadable"
    try:
        async with _slot():
            found = await asyncio.to_thread(extract_file, data, kind, limits)
        outcome = "read"
    except LimitExceeded as exc:
        outcome = "too_large"
        raise RequestTooLarge(
            f"the attached file {file.file_name!r} is too large to read: {_over(exc)}"
        ) from exc
    except ExtractionError as exc:
        raise _refused(
            index, "attachment_unreadable", f"{file.file_name!r} could not be read: {exc}"
        ) from exc
    finally:
        ATTACHMENTS.labels(kind, outcome).inc()
        ATTACHMENT_READ_DURATION.labels(kind).observe(time.perf_counter() - started)
    sections = tuple(s for s in found if s.text.strip())
    return dataclasses.replace(attachment, sections=sections)


_SETTINGS = {"RAG_MAX_TEXT_CHARS_PER_FILE": "MAX_PROMPT_CHARS"}
"""The extractors' caps that are the agent's settings (the others are constants here)."""


def _over(exc: LimitExceeded) -> str:
    """What went over the cap, naming the agent's setting, not the ingestion job's."""
    if exc.what is None:
        return str(exc)
    setting = _SETTINGS.get(exc.setting or "")
    return f"{exc.what} ({setting})" if setting else exc.what


_KIND_MIME = {ext: mime for mime, ext in MIME_EXTENSIONS.items()}


def _mime_type(file: FileAttachment, kind: str) -> str:
    """The file's MIME type as sent, or the format's when the browser sent none useful."""
    sent = file.mime_type.split(";", 1)[0].strip().lower()
    if MIME_EXTENSIONS.get(sent) == kind:
        return sent
    return _KIND_MIME.get(kind, sent or "application/octet-stream")


def passages(attachments: Iterable[Attachment], sources: dict[str, Passage]) -> list[Passage]:
    """The attachments' sections as numbered passages, registered in ``sources`` (a run's
    citations, ``Deps.sources``) so the final source list names them."""
    found: list[Passage] = []
    for attachment in attachments:
        for position, section in enumerate(attachment.sections):
            key = f"{ATTACHMENT_PREFIX}{attachment.id}#{position}"
            known = sources.get(key)
            if known is None:
                title = attachment.file_name
                if section.page is not None and attachment.mime_type == "application/pdf":
                    title += f", page {section.page}"
                known = Passage(
                    n=len(sources) + 1,
                    document_id=f"{ATTACHMENT_PREFIX}{attachment.id}",
                    title=title,
                    url=None,
                    score=1.0,
                    content=section.text,
                    chunk=position,
                )
                sources[key] = known
            found.append(known)
    return found


def text_chars(attachments: Iterable[Attachment]) -> int:
    """Characters of text the attachments add to every turn's prompt."""
    return sum(len(s.text) for a in attachments for s in a.sections)
