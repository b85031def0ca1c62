"""``python -m ragkeeper_rag``: the ingestion job (single run, continuous, purge).

Contract (docs/architecture.md, ingestion job contract): flags > env > config
file > defaults; JSON logs on stderr; the last stdout line is the stats JSON,
also written to the termination log so Kubernetes hands it to the operator; the
exit code is chosen by exception type: 0 success/partial, 1 retryable,
2 configuration, 3 credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import ValidationError

from ragkeeper_knowledge import KnowledgeStore, create_pool
from ragkeeper_knowledge import errors as kerrors
from ragkeeper_knowledge.embedding import EMBEDDING_VARIABLES, create_embedder
from ragkeeper_knowledge.extraction import SUPPORTED_EXTENSIONS

from .captions import Captioner
from .errors import EXIT_OK, ConfigurationError, Interrupted, TransientError, exit_code_for
from .logs import configure_logging
from .settings import RagSettings
from .sources import Source, build_source
from .sync import ChunkingOptions, RunStats, SyncEngine, purge
from .workers import resolve_workers

logger = logging.getLogger("ragkeeper_rag")


def parse_args(argv: Sequence[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="ragkeeper-rag",
        description="Sync a document source into the ragkeeper knowledge store.",
    )
    parser.add_argument("--pipeline", dest="pipeline_type", choices=["local", "google_drive"])
    parser.add_argument("--mode", dest="run_mode", choices=["single", "continuous", "purge"])
    parser.add_argument("--directory", dest="watch_directory", type=Path)
    parser.add_argument("--folder-id", dest="folder_id")
    parser.add_argument("--pipeline-id", dest="pipeline_id")
    parser.add_argument("--interval", dest="interval", type=float)
    ns = parser.parse_args(argv)
    return {k: v for k, v in vars(ns).items() if v is not None}


def default_pipeline_id(settings: RagSettings) -> str:
    if settings.pipeline_id:
        return settings.pipeline_id
    if settings.pipeline_type == "local" and settings.watch_directory is not None:
        return f"local:{settings.watch_directory.resolve()}"
    if settings.pipeline_type == "google_drive" and settings.folder_id:
        return f"google_drive:{settings.folder_id}"
    raise ConfigurationError("RAG_PIPELINE_ID (or --pipeline-id) is required")


def emit(stats: dict[str, Any], termination_log: Path, *, explicit: bool = False) -> None:
    """Print the stats as the last stdout line and into the termination log.

    Kubernetes creates ``/dev/termination-log`` in every container, so the default
    path is written only when it already exists (never created on a workstation);
    a path set explicitly through ``RAG_TERMINATION_LOG`` is always written.
    """
    line = _compact(stats)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    with contextlib.suppress(OSError):
        if explicit or termination_log.exists():
            termination_log.write_text(termination_message(stats), encoding="utf-8")


# Kubernetes keeps at most 4096 bytes of a termination message; stay under it.
TERMINATION_MESSAGE_BYTES = 4000
_TRIMMED_ERROR_CHARS = 200


def _compact(stats: dict[str, Any]) -> str:
    return json.dumps(stats, default=str, separators=(",", ":"))


def termination_message(stats: dict[str, Any]) -> str:
    """The stats as JSON that always parses and fits the termination message.

    Counts are never dropped: when the whole object is too large, error messages are cut to
    200 characters and errors are dropped from the end (``errors_truncated`` says so), then
    the single-line ``error`` is cut too.
    """
    line = _compact(stats)
    if len(line.encode()) <= TERMINATION_MESSAGE_BYTES:
        return line
    errors = [
        {k: str(v)[:_TRIMMED_ERROR_CHARS] for k, v in e.items()} for e in stats.get("errors", [])
    ]
    trimmed = dict(stats, errors_truncated=True)
    if isinstance(trimmed.get("error"), str):
        trimmed["error"] = trimmed["error"][:_TRIMMED_ERROR_CHARS]
    while True:
        trimmed["errors"] = errors
        line = _compact(trimmed)
        if len(line.encode()) <= TERMINATION_MESSAGE_BYTES or not errors:
            return line
        errors = errors[: len(errors) // 2]


def captioner_for(settings: RagSettings) -> Captioner | None:
    """The vision model's client when ``RAG_IMAGE_CAPTIONS`` is on (the settings checked that
    its base URL and model are set)."""
    if not settings.image_captions or not settings.caption_base_url or not settings.caption_model:
        return None
    key = settings.caption_api_key.get_secret_value() if settings.caption_api_key else None
    return Captioner(
        settings.caption_base_url,
        settings.caption_model,
        api_key=key,
        timeout_seconds=settings.caption_timeout_seconds,
    )


async def run(settings: RagSettings, stop: asyncio.Event) -> RunStats:
    """Run the configured mode once (or until stopped in continuous mode)."""
    if settings.database_url is None:
        raise ConfigurationError("DATABASE_URL is not set")
    pipeline_id = default_pipeline_id(settings)
    pool = await create_pool(settings.database_url.get_secret_value(), max_size=6)
    try:
        store = KnowledgeStore(pool)
        if settings.run_mode == "purge":
            return await purge(store, pipeline_id, settings.pipeline_type)
        source = build_source(settings, extensions=SUPPORTED_EXTENSIONS)
        embedder = create_embedder(settings.embedding)
        captioner = captioner_for(settings)
        try:
            engine = SyncEngine(
                store,
                embedder,
                chunking=ChunkingOptions(settings.chunk_size, settings.chunk_overlap),
                fetch_concurrency=settings.drive_max_concurrency,
                extract_workers=resolve_workers(settings.extract_workers),
                limits=settings.extraction_limits(),
                captioner=captioner,
            )
            if settings.run_mode == "single":
                return await engine.sync_once(source, pipeline_id, stop=stop)
            return await _continuous(engine, source, pipeline_id, settings.interval, stop)
        finally:
            await source.aclose()
            await embedder.aclose()
            if captioner is not None:
                await captioner.aclose()
    finally:
        await pool.close()


async def _continuous(
    engine: SyncEngine, source: Source, pipeline_id: str, interval: float, stop: asyncio.Event
) -> RunStats:
    """Sync every ``interval`` seconds until SIGTERM; a failed pass is logged and retried."""
    last: RunStats | None = None
    while not stop.is_set():
        try:
            last = await engine.sync_once(source, pipeline_id, stop=stop)
            last.run_mode = "continuous"
            logger.info("sync finished", extra={"stats": last.as_dict()})
        except Interrupted:
            break
        except kerrors.TransientError as exc:  # the job's and the store's
            logger.warning("sync failed, retrying in %.0fs: %s", interval, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
    if last is None:
        last = RunStats(pipeline_id, source.pipeline_type, "continuous")
    return last


async def _main_async(settings: RagSettings) -> RunStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return await run(settings, stop)


def _failed(settings: RagSettings | None, overrides: dict[str, Any], message: str) -> RunStats:
    pipeline_type = settings.pipeline_type if settings else str(overrides.get("pipeline_type", ""))
    pipeline_id = ""
    if settings is not None:
        with contextlib.suppress(ConfigurationError):
            pipeline_id = default_pipeline_id(settings)
    stats = RunStats(
        pipeline_id,
        pipeline_type,
        settings.run_mode if settings else str(overrides.get("run_mode", "")),
        status="failed",
    )
    stats.error = message
    return stats


def _setting_name(loc: tuple[int | str, ...]) -> str:
    """``RAG_CHUNK_SIZE``, ``chunk_size`` or ``EMBEDDING_DIMENSION (embedding.dimension)``."""
    where = ".".join(str(p) for p in loc) or "settings"
    if len(loc) == 2 and loc[0] == "embedding" and str(loc[1]) in EMBEDDING_VARIABLES:
        return f"{EMBEDDING_VARIABLES[str(loc[1])]} ({where})"
    return where


def main(argv: Sequence[str] | None = None) -> int:
    overrides = parse_args(argv)
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    settings: RagSettings | None = None
    termination_log = Path(os.environ.get("RAG_TERMINATION_LOG", "/dev/termination-log"))
    try:
        try:
            settings = RagSettings(**overrides)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = _setting_name(first["loc"])
            raise ConfigurationError(f"invalid setting {where}: {first['msg']}") from exc
        except (OSError, ValueError) as exc:  # unreadable/invalid RAG_CONFIG_FILE
            raise ConfigurationError(f"cannot read RAG_CONFIG_FILE: {exc}") from exc
        termination_log = settings.termination_log
        stats = asyncio.run(_main_async(settings))
        code = EXIT_OK
    except (asyncpg.PostgresError, OSError) as exc:
        err: BaseException = TransientError(f"{type(exc).__name__}: {exc}")
        stats = _failed(settings, overrides, str(err))
        code = exit_code_for(err)
        logger.error("run failed (retryable): %s", err)
    except Exception as exc:
        code = exit_code_for(exc)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        stats = _failed(settings, overrides, reason)
        kind = {1: "retryable failure", 2: "configuration error", 3: "credentials error"}[code]
        logger.error("%s: %s", kind, reason)
    emit(stats.as_dict(), termination_log, explicit="RAG_TERMINATION_LOG" in os.environ)
    return code
