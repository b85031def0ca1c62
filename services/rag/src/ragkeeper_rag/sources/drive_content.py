"""Which Drive files become documents, their change tokens, and how their bytes are fetched.

Google-native files have no bytes of their own: a Doc is exported as Markdown
(headings and tables survive as text; DOCX when Markdown export is refused), a
Sheet as XLSX (every sheet, so the engine's XLSX extractor writes rows per sheet
into ``document_rows``), a Slides deck as plain text. Other files are downloaded
as they are when the engine can extract their format (PNG, JPEG and WebP images
and scanned PDFs included: they are OCR'd); videos, archives, other image formats
and native types without a useful export (Forms, Sites, Drawings...) are left
out of listings instead of failing every run.

The change token (``SourceFile.version``) is ``md5Checksum`` for stored files,
so a rename or move never causes a re-download, and the file's ``version``
counter for native files (they have no checksum).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ragkeeper_knowledge.extraction import MIME_EXTENSIONS, SUPPORTED_EXTENSIONS
from ragkeeper_rag.sources.base import SourceFile

FOLDER = "application/vnd.google-apps.folder"
SHORTCUT = "application/vnd.google-apps.shortcut"
GOOGLE_DOC = "application/vnd.google-apps.document"
GOOGLE_SHEET = "application/vnd.google-apps.spreadsheet"
GOOGLE_SLIDES = "application/vnd.google-apps.presentation"

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

FILE_FIELDS = (
    "id,name,mimeType,parents,trashed,driveId,md5Checksum,version,modifiedTime,"
    "size,webViewLink,fileExtension,shortcutDetails(targetId,targetMimeType)"
)
"""Partial response for every listing and change: enough to decide without a second call."""


@dataclass(frozen=True, slots=True)
class Export:
    mime_type: str
    extension: str


EXPORTS: dict[str, tuple[Export, ...]] = {
    GOOGLE_DOC: (Export("text/markdown", "md"), Export(DOCX, "docx")),
    GOOGLE_SHEET: (Export(XLSX, "xlsx"),),
    GOOGLE_SLIDES: (Export("text/plain", "txt"),),
}
"""Export formats per native type, preferred first."""

DOWNLOAD_EXTENSIONS: dict[str, str] = MIME_EXTENSIONS
"""Stored (non-native) formats the engine extracts, by MIME type."""


def download_extension(item: dict[str, Any]) -> str | None:
    """Extension that picks the extractor for a stored file, or None if unsupported."""
    name = str(item.get("name", ""))
    ext = str(item.get("fileExtension") or (name.rsplit(".", 1)[1] if "." in name else ""))
    ext = ext.lower()
    if ext in SUPPORTED_EXTENSIONS:
        return ext
    return DOWNLOAD_EXTENSIONS.get(str(item.get("mimeType", "")))


def is_document(item: dict[str, Any]) -> bool:
    """True for files that become documents (not folders, shortcuts or unsupported types)."""
    mime = str(item.get("mimeType", ""))
    if mime in EXPORTS:
        return True
    if mime.startswith("application/vnd.google-apps."):
        return False
    return download_extension(item) is not None


def file_version(item: dict[str, Any]) -> str:
    """Cheap change token: checksum for stored files, version counter for native ones."""
    if item.get("md5Checksum"):
        return f"md5:{item['md5Checksum']}"
    if item.get("version"):
        return f"v:{item['version']}"
    return f"t:{item.get('modifiedTime', '')}"


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def to_source_file(item: dict[str, Any], path: str, shortcut_id: str | None = None) -> SourceFile:
    """The engine's view of one Drive file found at ``path`` (folder path + name)."""
    size = item.get("size")
    metadata: dict[str, Any] = {
        "drive_file_id": item["id"],
        "mime_type": item.get("mimeType"),
        "drive_id": item.get("driveId"),
        "modified_time": item.get("modifiedTime"),
    }
    if shortcut_id:
        metadata["shortcut_id"] = shortcut_id
    return SourceFile(
        source_id=str(item["id"]),
        path=path,
        title=str(item.get("name", item["id"])),
        mime_type=str(item.get("mimeType", "application/octet-stream")),
        version=file_version(item),
        url=item.get("webViewLink"),
        size=int(size) if size is not None else None,
        modified_at=_parse_time(item.get("modifiedTime")),
        metadata={k: v for k, v in metadata.items() if v is not None},
    )


def join_path(folder_path: str, name: str) -> str:
    """``Reports/2024`` + ``q1.pdf``; names may contain ``/`` in Drive, keep them readable."""
    name = name.replace("/", "∕")
    return f"{folder_path}/{name}" if folder_path else name
