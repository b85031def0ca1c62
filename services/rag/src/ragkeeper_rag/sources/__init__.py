"""Document sources. ``build_source`` picks one from the job's settings."""

from __future__ import annotations

from ..errors import ConfigurationError
from ..settings import RagSettings
from .base import FetchedContent, ScanResult, Source, SourceFile


def build_source(settings: RagSettings, *, extensions: frozenset[str]) -> Source:
    """The source named by ``RAG_PIPELINE_TYPE``/``--pipeline``, validated."""
    if settings.pipeline_type == "local":
        from .local import LocalSource

        if settings.watch_directory is None:
            raise ConfigurationError(
                "RAG_WATCH_DIRECTORY (or --directory) is required for the local pipeline"
            )
        return LocalSource(
            settings.watch_directory, extensions=extensions, max_file_bytes=settings.max_file_bytes
        )
    from .google_drive import GoogleDriveSource

    return GoogleDriveSource.from_settings(settings)


__all__ = ["FetchedContent", "ScanResult", "Source", "SourceFile", "build_source"]
