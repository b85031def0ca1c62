"""Local folder source: a recursive walk of a directory (a volume in Kubernetes).

Every scan is a full listing — walking a directory is cheap compared with
reading files — and the cheap change token is ``size:mtime_ns``. The engine
only reads a file whose token moved, and only re-embeds chunks whose text
changed, so an unchanged tree costs one ``stat`` per file.

Hostile trees are expected: symlink loops are cut by remembering the
``(device, inode)`` of every directory entered, symlinks that resolve outside
the root are refused (a DataSource must not read the container's own files),
and unreadable entries are reported in the run's ``errors`` instead of
failing the run.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, FileSkipped
from .base import FetchedContent, ScanResult, SourceFile

logger = logging.getLogger(__name__)


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


class LocalSource:
    """Files under ``root`` whose extension is in ``extensions``; hidden entries are ignored."""

    pipeline_type = "local"

    def __init__(
        self, root: Path, *, extensions: frozenset[str], max_file_bytes: int | None = None
    ) -> None:
        self.root = root
        self.extensions = extensions
        self.max_file_bytes = max_file_bytes

    def _check_root(self) -> Path:
        try:
            resolved = self.root.resolve(strict=True)
        except (FileNotFoundError, RuntimeError) as exc:
            raise ConfigurationError(f"watch directory {self.root} does not exist") from exc
        if not resolved.is_dir():
            raise ConfigurationError(f"watch directory {self.root} is not a directory")
        if not os.access(resolved, os.R_OK | os.X_OK):
            raise ConfigurationError(f"watch directory {self.root} is not readable")
        return resolved

    async def scan(self, cursor: Mapping[str, Any] | None) -> ScanResult:
        return await asyncio.to_thread(self._scan)

    def _scan(self) -> ScanResult:
        root = self._check_root()
        result = ScanResult(files=[], full=True)
        seen_dirs: set[tuple[int, int]] = set()
        root_stat = root.stat()
        seen_dirs.add((root_stat.st_dev, root_stat.st_ino))
        stack = [root]
        while stack:
            directory = stack.pop()
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError as exc:
                result.skipped.append(
                    (self._rel(directory, root), f"unreadable directory: {exc.strerror}")
                )
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                self._visit(entry, root, seen_dirs, stack, result)
        result.next_cursor = {"last_scan": datetime.now(UTC).isoformat()}
        return result

    def _visit(
        self,
        entry: os.DirEntry[str],
        root: Path,
        seen_dirs: set[tuple[int, int]],
        stack: list[Path],
        result: ScanResult,
    ) -> None:
        path = Path(entry.path)
        rel = self._rel(path, root)
        try:
            if entry.is_symlink():
                target = path.resolve(strict=True)
                if not target.is_relative_to(root):
                    result.skipped.append((rel, "symlink points outside the watched directory"))
                    return
            st = entry.stat(follow_symlinks=True)
        except FileNotFoundError:
            result.skipped.append((rel, "broken symlink"))
            return
        except RuntimeError:
            result.skipped.append((rel, "symlink loop"))
            return
        except OSError as exc:
            result.skipped.append((rel, f"cannot stat: {exc.strerror}"))
            return
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                if entry.is_symlink():
                    result.skipped.append((rel, "symlink loop"))
                return
            seen_dirs.add(key)
            stack.append(path)
            return
        if not stat.S_ISREG(st.st_mode) or _extension(entry.name) not in self.extensions:
            return
        result.files.append(
            SourceFile(
                source_id=rel,
                path=rel,
                title=entry.name,
                mime_type=mimetypes.guess_type(entry.name)[0] or "application/octet-stream",
                version=f"{st.st_size}:{st.st_mtime_ns}",
                url=path.absolute().as_uri(),
                size=st.st_size,
                modified_at=datetime.fromtimestamp(st.st_mtime, UTC),
            )
        )

    @staticmethod
    def _rel(path: Path, root: Path) -> str:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return path.as_posix()

    async def fetch(self, file: SourceFile) -> FetchedContent:
        return await asyncio.to_thread(self._read, file)

    def _read(self, file: SourceFile) -> FetchedContent:
        path = self._check_root() / file.source_id
        try:
            if self.max_file_bytes is not None and path.stat().st_size > self.max_file_bytes:
                raise FileSkipped(f"larger than the {self.max_file_bytes}-byte limit")
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise FileSkipped("file vanished during the sync") from exc
        except PermissionError as exc:
            raise FileSkipped("permission denied") from exc
        except IsADirectoryError as exc:
            raise FileSkipped("is a directory") from exc
        except OSError as exc:
            raise FileSkipped(f"read error: {exc.strerror}") from exc
        return FetchedContent(data=data, mime_type=file.mime_type, extension=_extension(file.title))

    async def aclose(self) -> None:
        return None
