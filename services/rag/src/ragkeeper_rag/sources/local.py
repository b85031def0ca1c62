"""Local folder source: a recursive walk of a directory (a volume in Kubernetes).

Every scan is a full listing — walking a directory is cheap compared with
reading files — and the cheap change token is ``size:mtime_ns``. The engine
only reads a file whose token moved, and only re-embeds chunks whose text
changed, so an unchanged tree costs one ``stat`` per file.

Hostile trees are expected, including a tree that changes while the job runs
(docs/architecture.md, ingestion pipeline: local folder reads stay inside the root):

* symlink loops are cut by remembering the ``(device, inode)`` of every
  directory entered; symlinks that resolve outside the root are refused (a
  DataSource must not read the container's own files); a symlink inside the
  root is listed under its own name and recorded with its real path;
* the walk and the reads open every directory and file relative to a
  descriptor of the root, one component at a time with ``O_NOFOLLOW``, so a
  component swapped for a symlink after the scan is refused, never followed;
* a read checks the opened handle (``fstat``): a regular file with the device
  and inode the scan recorded, read no further than ``max_file_bytes + 1``;
* unreadable or refused entries are reported in the run's ``errors`` instead
  of failing the run.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import mimetypes
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, FileSkipped
from .base import FetchedContent, ScanResult, SourceFile

logger = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO does not wait for a writer; O_NOCTTY: a terminal is not adopted.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

LINK_IN_PATH = "refused: a symlink is in its path (changed since the scan)"
NOT_A_DIRECTORY = "refused: a directory in its path is no longer a directory"
NOT_REGULAR = "refused: no longer a regular file"
REPLACED = "refused: replaced by another file since the scan"
NOT_UNDER_ROOT = "refused: not a plain path under the watched directory"


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


@dataclass(frozen=True, slots=True)
class LocalFile(SourceFile):
    """A scanned file and what its read checks against.

    ``real_path`` is where the file is under the root with no symlink in it (it differs from
    ``path`` when the file was listed through a symlink inside the root); ``device`` and
    ``inode`` are the file's at scan time.
    """

    real_path: str = ""
    device: int = -1
    inode: int = -1


def _parts(rel: str) -> list[str]:
    """The components of a path relative to the root; refused if any could leave it."""
    if rel in ("", "."):
        return []
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise FileSkipped(NOT_UNDER_ROOT)
    return parts


def _refuse_link(dir_fd: int, name: str, exc: OSError) -> None:
    """Raise the per-file error for an ``O_NOFOLLOW`` open that met a symlink or a
    non-directory; any other error is left to the caller."""
    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
        return
    try:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    raise FileSkipped(
        LINK_IN_PATH if is_link or exc.errno == errno.ELOOP else NOT_A_DIRECTORY
    ) from exc


def _read_error(exc: OSError) -> FileSkipped:
    if isinstance(exc, FileNotFoundError):
        return FileSkipped("file vanished during the sync")
    if isinstance(exc, PermissionError):
        return FileSkipped("permission denied")
    return FileSkipped(f"read error: {exc.strerror}")


def _open_dir(root_fd: int, parts: list[str]) -> int:
    """A new descriptor of the directory ``parts`` under ``root_fd``, opened one component at
    a time without following a symlink (``FileSkipped`` if a component is not a directory)."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                _refuse_link(fd, part, exc)
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_handle(st: os.stat_result, file: SourceFile) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise FileSkipped(LINK_IN_PATH)
    if not stat.S_ISREG(st.st_mode):
        raise FileSkipped(NOT_REGULAR)
    if isinstance(file, LocalFile) and (st.st_dev, st.st_ino) != (file.device, file.inode):
        raise FileSkipped(REPLACED)


def _open_file(dir_fd: int, name: str, file: SourceFile) -> tuple[int, os.stat_result]:
    """Open ``name`` in ``dir_fd`` and check the handle; the ``lstat`` first spares opening a
    FIFO or device at all, the ``fstat`` after is the check that counts."""
    try:
        _check_handle(os.stat(name, dir_fd=dir_fd, follow_symlinks=False), file)
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        _refuse_link(dir_fd, name, exc)
        raise
    try:
        st = os.fstat(fd)
        _check_handle(st, file)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _open_checked(root_fd: int, parts: list[str], file: SourceFile) -> tuple[int, os.stat_result]:
    """Open the file at ``parts`` under ``root_fd`` and check its handle."""
    dir_fd = _open_dir(root_fd, parts[:-1])
    try:
        return _open_file(dir_fd, parts[-1], file)
    finally:
        os.close(dir_fd)


def _read_at_most(fd: int, size_hint: int, limit: int | None) -> bytes:
    """Everything from ``fd``, but never more than ``limit + 1`` bytes (then refused)."""
    cap = None if limit is None else limit + 1
    chunks: list[bytes] = []
    total = 0
    want = size_hint + 1 if cap is None else min(size_hint + 1, cap)
    while want > 0:
        block = os.read(fd, want)
        if not block:
            break
        chunks.append(block)
        total += len(block)
        want = 1 << 20 if cap is None else min(1 << 20, cap - total)
    if limit is not None and total > limit:
        raise FileSkipped(f"larger than the {limit}-byte limit")
    return b"".join(chunks)


@dataclass(slots=True)
class _Walk:
    """The state of one scan: directories still to list as (listed path, real path)."""

    root: Path
    root_fd: int
    result: ScanResult
    seen_dirs: set[tuple[int, int]]
    stack: list[tuple[str, str]] = field(default_factory=lambda: [("", "")])


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

    def _open_root(self) -> tuple[Path, int]:
        root = self._check_root()
        try:
            return root, os.open(root, _DIR_FLAGS)
        except OSError as exc:
            raise ConfigurationError(f"watch directory {self.root} is not readable") from exc

    async def scan(self, cursor: Mapping[str, Any] | None) -> ScanResult:
        return await asyncio.to_thread(self._scan)

    def _scan(self) -> ScanResult:
        root, root_fd = self._open_root()
        try:
            root_stat = os.fstat(root_fd)
            walk = _Walk(root, root_fd, ScanResult(files=[], full=True), set())
            walk.seen_dirs.add((root_stat.st_dev, root_stat.st_ino))
            while walk.stack:
                listed, real = walk.stack.pop()
                self._list(walk, listed, real)
        finally:
            os.close(root_fd)
        walk.result.next_cursor = {"last_scan": datetime.now(UTC).isoformat()}
        return walk.result

    def _list(self, walk: _Walk, listed: str, real: str) -> None:
        """Visit the entries of one directory, opened from the root without following links."""
        try:
            fd = _open_dir(walk.root_fd, _parts(real))
        except FileSkipped as exc:
            walk.result.skipped.append((listed or ".", f"unreadable directory: {exc}"))
            return
        except OSError as exc:
            walk.result.skipped.append((listed or ".", f"unreadable directory: {exc.strerror}"))
            return
        try:  # the entries stat through ``fd``: it stays open until they are visited
            entries = sorted(os.scandir(fd), key=lambda e: e.name)
            for entry in entries:
                if not entry.name.startswith("."):
                    self._visit(walk, entry, _join(listed, entry.name), _join(real, entry.name))
        except OSError as exc:
            walk.result.skipped.append((listed or ".", f"unreadable directory: {exc.strerror}"))
        finally:
            os.close(fd)

    def _visit(self, walk: _Walk, entry: os.DirEntry[str], rel: str, real: str) -> None:
        result = walk.result
        try:
            if entry.is_symlink():
                target = (walk.root / real).resolve(strict=True)
                if not target.is_relative_to(walk.root):
                    result.skipped.append((rel, "symlink points outside the watched directory"))
                    return
                real = target.relative_to(walk.root).as_posix()
            st = entry.stat(follow_symlinks=entry.is_symlink())
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
            if key in walk.seen_dirs:
                if entry.is_symlink():
                    result.skipped.append((rel, "symlink loop"))
                return
            walk.seen_dirs.add(key)
            walk.stack.append((rel, real))
            return
        if stat.S_ISREG(st.st_mode) and _extension(entry.name) in self.extensions:
            result.files.append(self._file(walk.root, entry.name, rel, real, st))

    @staticmethod
    def _file(root: Path, name: str, rel: str, real: str, st: os.stat_result) -> LocalFile:
        return LocalFile(
            source_id=rel,
            path=rel,
            title=name,
            mime_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
            version=f"{st.st_size}:{st.st_mtime_ns}",
            url=(root / rel).as_uri(),
            size=st.st_size,
            modified_at=datetime.fromtimestamp(st.st_mtime, UTC),
            real_path=real,
            device=st.st_dev,
            inode=st.st_ino,
        )

    async def fetch(self, file: SourceFile) -> FetchedContent:
        return await asyncio.to_thread(self._read, file)

    def _read(self, file: SourceFile) -> FetchedContent:
        """The file's bytes, read through a handle checked to be the scanned regular file."""
        parts = _parts(file.real_path if isinstance(file, LocalFile) else file.source_id)
        if not parts:
            raise FileSkipped(NOT_UNDER_ROOT)
        _, root_fd = self._open_root()
        try:
            fd, st = _open_checked(root_fd, parts, file)
            try:
                if self.max_file_bytes is not None and st.st_size > self.max_file_bytes:
                    raise FileSkipped(f"larger than the {self.max_file_bytes}-byte limit")
                data = _read_at_most(fd, st.st_size, self.max_file_bytes)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _read_error(exc) from exc
        finally:
            os.close(root_fd)
        return FetchedContent(data=data, mime_type=file.mime_type, extension=_extension(file.title))

    async def aclose(self) -> None:
        return None


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name
