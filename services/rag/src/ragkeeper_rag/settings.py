"""The ingestion job's one settings object.

Precedence (docs/architecture.md, ingestion job contract): command-line flags >
environment > config file (``RAG_CONFIG_FILE``, JSON or TOML with the same field
names) > defaults. Flags are applied by the CLI on top of what this object reads.

The embedding settings are the nested ``embedding`` field (the knowledge store's
``EmbeddingConfig``): the ``EMBEDDING_*`` variables, or an ``[embedding]`` table
(``"embedding": {...}`` in JSON) in the config file keyed by the field names
(``provider``, ``model``, ``base_url``, ``dimension``...). The variables override
the file key by key, so the same precedence holds for them as for the rest.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ragkeeper_knowledge.embedding import EmbeddingConfig, embedding_env
from ragkeeper_knowledge.extraction.model import DEFAULT_LIMITS, ExtractionLimits

PipelineType = Literal["local", "google_drive"]
RunMode = Literal["single", "continuous", "purge"]


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Reads ``RAG_CONFIG_FILE`` (JSON or TOML); lowest priority after defaults."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path:
            p = Path(path)
            text = p.read_text(encoding="utf-8")
            self._data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class RagSettings(BaseSettings):
    """Every knob of the ingestion job, read from env.

    The variable names are those of docs/architecture.md, ingestion job contract.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    pipeline_type: PipelineType = Field(
        "local", validation_alias=AliasChoices("RAG_PIPELINE_TYPE", "pipeline_type")
    )
    run_mode: RunMode = Field("single", validation_alias=AliasChoices("RUN_MODE", "run_mode"))
    watch_directory: Path | None = Field(
        None, validation_alias=AliasChoices("RAG_WATCH_DIRECTORY", "watch_directory")
    )
    folder_id: str | None = Field(
        None, validation_alias=AliasChoices("RAG_WATCH_FOLDER_ID", "folder_id")
    )
    pipeline_id: str | None = Field(
        None, validation_alias=AliasChoices("RAG_PIPELINE_ID", "pipeline_id")
    )
    interval: float = Field(60.0, gt=0, validation_alias=AliasChoices("CHECK_INTERVAL", "interval"))
    database_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )

    # chunking
    chunk_size: int = Field(
        1200, ge=100, le=20000, validation_alias=AliasChoices("RAG_CHUNK_SIZE", "chunk_size")
    )
    chunk_overlap: int = Field(
        150, ge=0, validation_alias=AliasChoices("RAG_CHUNK_OVERLAP", "chunk_overlap")
    )
    max_file_bytes: int = Field(
        100 * 1024 * 1024,
        gt=0,
        validation_alias=AliasChoices("RAG_MAX_FILE_BYTES", "max_file_bytes"),
    )
    termination_log: Path = Field(
        Path("/dev/termination-log"),
        validation_alias=AliasChoices("RAG_TERMINATION_LOG", "termination_log"),
    )

    # Google Drive (owned by the Drive source; see sources/google_drive.py)
    google_drive_credentials_json: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "GOOGLE_DRIVE_CREDENTIALS_JSON", "google_drive_credentials_json"
        ),
    )
    google_application_credentials: Path | None = Field(
        None,
        validation_alias=AliasChoices(
            "GOOGLE_APPLICATION_CREDENTIALS", "google_application_credentials"
        ),
    )
    google_oauth_token_file: Path | None = Field(
        None,
        validation_alias=AliasChoices("GOOGLE_OAUTH_TOKEN_FILE", "google_oauth_token_file"),
    )
    google_drive_api_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("GOOGLE_DRIVE_API_ENDPOINT", "google_drive_api_endpoint"),
    )
    drive_full_resync_hours: float = Field(
        24.0,
        gt=0,
        validation_alias=AliasChoices("RAG_DRIVE_FULL_RESYNC_HOURS", "drive_full_resync_hours"),
    )
    drive_max_concurrency: int = Field(
        4,
        ge=1,
        le=32,
        validation_alias=AliasChoices("RAG_DRIVE_MAX_CONCURRENCY", "drive_max_concurrency"),
    )

    # processes that extract and chunk files: 0 = one per available CPU (at most 2), 1 = a thread
    extract_workers: int = Field(
        0,
        ge=0,
        le=32,
        validation_alias=AliasChoices("RAG_EXTRACT_WORKERS", "extract_workers"),
    )

    # per-file caps against decompression bombs (a file over one is refused and reported)
    max_uncompressed_bytes: int = Field(
        DEFAULT_LIMITS.max_uncompressed_bytes,
        gt=0,
        validation_alias=AliasChoices("RAG_MAX_UNCOMPRESSED_BYTES", "max_uncompressed_bytes"),
    )
    max_zip_entries: int = Field(
        DEFAULT_LIMITS.max_zip_entries,
        gt=0,
        validation_alias=AliasChoices("RAG_MAX_ZIP_ENTRIES", "max_zip_entries"),
    )
    max_compression_ratio: int = Field(
        DEFAULT_LIMITS.max_compression_ratio,
        gt=0,
        validation_alias=AliasChoices("RAG_MAX_COMPRESSION_RATIO", "max_compression_ratio"),
    )
    max_rows_per_file: int = Field(
        DEFAULT_LIMITS.max_rows,
        gt=0,
        validation_alias=AliasChoices("RAG_MAX_ROWS_PER_FILE", "max_rows_per_file"),
    )
    max_pages_per_file: int = Field(
        DEFAULT_LIMITS.max_pages,
        gt=0,
        validation_alias=AliasChoices("RAG_MAX_PAGES_PER_FILE", "max_pages_per_file"),
    )
    max_text_chars_per_file: int = Field(
        DEFAULT_LIMITS.max_text_chars,
        gt=0,
        validation_alias=AliasChoices("RAG_MAX_TEXT_CHARS_PER_FILE", "max_text_chars_per_file"),
    )
    max_chunks_per_file: int = Field(
        DEFAULT_LIMITS.max_chunks,
        gt=0,
        validation_alias=AliasChoices("RAG_MAX_CHUNKS_PER_FILE", "max_chunks_per_file"),
    )
    # each extraction worker's address-space limit (RLIMIT_AS); 0 = none
    worker_memory_bytes: int = Field(
        DEFAULT_LIMITS.worker_memory_bytes,
        ge=0,
        validation_alias=AliasChoices("RAG_WORKER_MEMORY_BYTES", "worker_memory_bytes"),
    )
    file_timeout_seconds: float = Field(
        DEFAULT_LIMITS.file_timeout_seconds,
        gt=0,
        validation_alias=AliasChoices("RAG_FILE_TIMEOUT_SECONDS", "file_timeout_seconds"),
    )

    # OCR of PNG/JPEG/WebP files and of PDF pages without a text layer (tesseract; docs/ocr.md)
    ocr_enabled: bool = Field(
        DEFAULT_LIMITS.ocr_enabled,
        validation_alias=AliasChoices("RAG_OCR_ENABLED", "ocr_enabled"),
    )
    ocr_max_pixels: int = Field(
        DEFAULT_LIMITS.ocr_max_pixels,
        gt=0,
        validation_alias=AliasChoices("RAG_OCR_MAX_PIXELS", "ocr_max_pixels"),
    )

    # captions of PNG/JPEG/WebP files from a vision model (an OpenAI-compatible chat completions
    # API), cached by content hash (docs/ocr.md, "Captions")
    image_captions: bool = Field(
        False, validation_alias=AliasChoices("RAG_IMAGE_CAPTIONS", "image_captions")
    )
    caption_base_url: str | None = Field(
        None, validation_alias=AliasChoices("RAG_CAPTION_BASE_URL", "caption_base_url")
    )
    caption_model: str | None = Field(
        None, validation_alias=AliasChoices("RAG_CAPTION_MODEL", "caption_model")
    )
    caption_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("RAG_CAPTION_API_KEY", "caption_api_key")
    )
    caption_timeout_seconds: float = Field(
        60.0,
        gt=0,
        validation_alias=AliasChoices("RAG_CAPTION_TIMEOUT_SECONDS", "caption_timeout_seconds"),
    )

    # the embedder (EMBEDDING_* or the config file's [embedding] table); the agent reads the same
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> RagSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("RAG_CHUNK_OVERLAP must be smaller than RAG_CHUNK_SIZE")
        return self

    @model_validator(mode="after")
    def _captions_need_a_model(self) -> RagSettings:
        if self.image_captions:
            missing = [
                name
                for name, value in (
                    ("RAG_CAPTION_BASE_URL", self.caption_base_url),
                    ("RAG_CAPTION_MODEL", self.caption_model),
                )
                if not (value and value.strip())
            ]
            if missing:
                raise ValueError(f"RAG_IMAGE_CAPTIONS=true needs {' and '.join(missing)}")
        return self

    def extraction_limits(self) -> ExtractionLimits:
        """The per-file caps and the worker bounds, as the extraction workers take them."""
        return ExtractionLimits(
            max_uncompressed_bytes=self.max_uncompressed_bytes,
            max_zip_entries=self.max_zip_entries,
            max_compression_ratio=self.max_compression_ratio,
            max_rows=self.max_rows_per_file,
            max_pages=self.max_pages_per_file,
            max_text_chars=self.max_text_chars_per_file,
            max_chunks=self.max_chunks_per_file,
            worker_memory_bytes=self.worker_memory_bytes,
            file_timeout_seconds=self.file_timeout_seconds,
            ocr_enabled=self.ocr_enabled,
            ocr_max_pixels=self.ocr_max_pixels,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            # EMBEDDING_* as the nested `embedding` dict, merged key by key with the file's table
            InitSettingsSource(settings_cls, init_kwargs={"embedding": embedding_env()}),
            env_settings,
            _ConfigFileSource(settings_cls, os.environ.get("RAG_CONFIG_FILE")),
        )
