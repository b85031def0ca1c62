"""A Google Drive v3 fake served over HTTP on 127.0.0.1 for the real Google clients.

Google's servers are a true external boundary, so tests (and ``bench/drive.py``)
run the real ``google-api-python-client`` and ``google-auth`` against this
stateful fake instead:

- ``POST /token``: verifies the service account's RS256 JWT assertion with the
  public key registered by :meth:`DriveFake.service_account`, or an OAuth
  refresh token; hands out bearer tokens the API routes then require;
- ``files.list`` (a real parser for the ``q`` subset the source uses: ``in
  parents``, ``trashed``, ``mimeType``, ``and``/``or``/``not``, parentheses),
  ``files.get`` (+ ``alt=media``), ``files.export``;
- ``changes.getStartPageToken`` / ``changes.list`` over an append-only change
  log (HTTP 410 for tokens older than :meth:`expire_page_tokens`);
- shared drives (items hidden unless ``supportsAllDrives`` /
  ``includeItemsFromAllDrives``), pagination capped at ``page_cap``;
- fault injection (429, 403 rate-limit reasons, 5xx, dropped connections) and a
  per-method request counter for assertions and the benchmark.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from ragkeeper_rag.settings import RagSettings
from ragkeeper_rag.sources.base import ScanResult, SourceFile
from ragkeeper_rag.sources.drive_api import RetryPolicy
from ragkeeper_rag.sources.google_drive import GoogleDriveSource
from tests.rag.corpus import docx_bytes, xlsx_bytes

FOLDER = "application/vnd.google-apps.folder"
SHORTCUT = "application/vnd.google-apps.shortcut"
DOC = "application/vnd.google-apps.document"
SHEET = "application/vnd.google-apps.spreadsheet"
SLIDES = "application/vnd.google-apps.presentation"
FORM = "application/vnd.google-apps.form"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

_MIME_BY_EXT = {
    "txt": "text/plain",
    "md": "text/markdown",
    "html": "text/html",
    "pdf": "application/pdf",
    "csv": "text/csv",
    "docx": DOCX,
    "xlsx": XLSX,
    "png": "image/png",
    "zip": "application/zip",
}
_EXPORTS = {
    DOC: {"text/markdown", "text/plain", DOCX, "application/pdf"},
    SHEET: {XLSX, "text/csv", "application/pdf"},
    SLIDES: {"text/plain", "application/pdf"},
}
EXPORT_LIMIT_BYTES = 10 * 1024 * 1024


@dataclass
class FakeFile:
    id: str
    name: str
    mime_type: str
    parents: list[str]
    content: bytes = b""
    sheets: dict[str, list[list[Any]]] | None = None
    drive_id: str | None = None
    trashed: bool = False
    shortcut_target: str | None = None
    version: int = 1
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    export_size: int | None = None
    """Pretend export size (to trigger ``exportSizeLimitExceeded``)."""

    def resource(self, fake: DriveFake) -> dict[str, Any]:
        native = self.mime_type.startswith("application/vnd.google-apps.")
        res: dict[str, Any] = {
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime_type,
            "parents": list(self.parents),
            "trashed": self.trashed,
            "version": str(self.version),
            "modifiedTime": self.modified.isoformat().replace("+00:00", "Z"),
        }
        if self.drive_id:
            res["driveId"] = self.drive_id
        if native:
            kind = {DOC: "document", SHEET: "spreadsheets", SLIDES: "presentation"}.get(
                self.mime_type, "drive/folders"
            )
            res["webViewLink"] = f"https://docs.google.com/{kind}/d/{self.id}/edit"
        else:
            res["webViewLink"] = f"https://drive.google.com/file/d/{self.id}/view"
            res["md5Checksum"] = hashlib.md5(self.content, usedforsecurity=False).hexdigest()
            res["size"] = str(len(self.content))
            if "." in self.name:
                res["fileExtension"] = self.name.rsplit(".", 1)[1]
        if self.shortcut_target:
            target = fake.files.get(self.shortcut_target)
            res["shortcutDetails"] = {
                "targetId": self.shortcut_target,
                "targetMimeType": target.mime_type if target else "application/octet-stream",
            }
        return res


@dataclass
class _Fault:
    status: int
    reason: str | None
    methods: frozenset[str] | None
    remaining: int
    retry_after: int | None = None
    drop_connection: bool = False


class DriveFake:
    """State + HTTP server. Use as a context manager; ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, *, page_cap: int = 1000) -> None:
        self.page_cap = page_cap
        self.files: dict[str, FakeFile] = {}
        self.changes: list[tuple[int, str, bool, str | None]] = []  # seq, id, removed, drive
        self.calls: Counter[str] = Counter()
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self._seq = 0
        self._epoch = 1
        self._faults: list[_Fault] = []
        self._keys: dict[str, Any] = {}
        self._refresh_tokens: dict[str, tuple[str, str]] = {}
        self._access_tokens: set[str] = set()
        self.network_down = False
        self._cut_after: int | None = None
        self.root_id = self.add_folder("My Drive root", parent=None)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> DriveFake:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="drive-fake", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_calls(self) -> int:
        """Drive API requests (token requests excluded)."""
        return sum(n for k, n in self.calls.items() if k != "token")

    # ------------------------------------------------------------ credentials
    def service_account(
        self, email: str = "ingest@ragkeeper-test.iam.gserviceaccount.com", *, register: bool = True
    ) -> dict[str, Any]:
        """A service-account JSON with a fresh RSA key whose token_uri is this fake."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        if register:
            self._keys[email] = key.public_key()
        return {
            "type": "service_account",
            "project_id": "ragkeeper-test",
            "private_key_id": hashlib.sha1(pem.encode(), usedforsecurity=False).hexdigest(),
            "private_key": pem,
            "client_email": email,
            "client_id": "1234567890",
            "token_uri": f"{self.url}/token",
        }

    def authorized_user(self) -> dict[str, Any]:
        """An OAuth authorized-user token file body for this fake."""
        refresh = f"1//refresh-{next(self._ids)}"
        self._refresh_tokens[refresh] = ("client-1.apps.googleusercontent.com", "client-secret")
        return {
            "type": "authorized_user",
            "client_id": "client-1.apps.googleusercontent.com",
            "client_secret": "client-secret",
            "refresh_token": refresh,
            "token_uri": f"{self.url}/token",
        }

    # ------------------------------------------------------------ mutations
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def _log(self, file_id: str, removed: bool = False) -> None:
        self._seq += 1
        drive = self.files[file_id].drive_id if file_id in self.files else None
        self.changes.append((self._seq, file_id, removed, drive))

    def _drive_of(self, parent: str | None) -> str | None:
        return self.files[parent].drive_id if parent else None

    def _add(self, name: str, mime: str, parent: str | None, **kw: Any) -> str:
        with self.lock:
            file_id = kw.pop("file_id", None) or self._new_id("d" if mime == FOLDER else "f")
            drive = kw.pop("drive_id", None) or self._drive_of(parent)
            self.files[file_id] = FakeFile(
                file_id, name, mime, [parent] if parent else [], drive_id=drive, **kw
            )
            self._log(file_id)
            return file_id

    def add_folder(self, name: str, parent: str | None) -> str:
        return self._add(name, FOLDER, parent)

    def add_shared_drive(self, name: str) -> str:
        """A shared drive; its id is also the id of its root folder, as in Drive."""
        drive_id = self._new_id("0A")
        return self._add(name, FOLDER, None, file_id=drive_id, drive_id=drive_id)

    def add_file(
        self, name: str, parent: str, content: bytes | str = b"", mime: str | None = None
    ) -> str:
        data = content.encode() if isinstance(content, str) else content
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        return self._add(
            name, mime or _MIME_BY_EXT.get(ext, "application/octet-stream"), parent, content=data
        )

    def add_doc(self, name: str, parent: str, text: str) -> str:
        return self._add(name, DOC, parent, content=text.encode())

    def add_slides(self, name: str, parent: str, text: str) -> str:
        return self._add(name, SLIDES, parent, content=text.encode())

    def add_sheet(self, name: str, parent: str, sheets: dict[str, list[list[Any]]]) -> str:
        return self._add(name, SHEET, parent, sheets=sheets)

    def add_native(self, name: str, parent: str, mime: str) -> str:
        return self._add(name, mime, parent)

    def add_shortcut(self, name: str, parent: str, target: str) -> str:
        return self._add(name, SHORTCUT, parent, shortcut_target=target)

    def _touch(self, file_id: str) -> None:
        f = self.files[file_id]
        f.version += 1
        f.modified = datetime.now(UTC) + timedelta(microseconds=f.version)
        self._log(file_id)

    def update(
        self,
        file_id: str,
        content: bytes | str | None = None,
        sheets: dict[str, list[list[Any]]] | None = None,
    ) -> None:
        with self.lock:
            f = self.files[file_id]
            if content is not None:
                f.content = content.encode() if isinstance(content, str) else content
            if sheets is not None:
                f.sheets = sheets
            self._touch(file_id)

    def rename(self, file_id: str, name: str) -> None:
        with self.lock:
            self.files[file_id].name = name
            self._touch(file_id)

    def move(self, file_id: str, parent: str) -> None:
        with self.lock:
            self.files[file_id].parents = [parent]
            self._touch(file_id)

    def _descendants(self, folder_id: str) -> list[str]:
        found: list[str] = []
        frontier = [folder_id]
        while frontier:
            current = frontier.pop()
            for f in self.files.values():
                if current in f.parents:
                    found.append(f.id)
                    if f.mime_type == FOLDER:
                        frontier.append(f.id)
        return found

    def trash(self, file_id: str) -> None:
        """Trash a file, or a folder and (implicitly, as Drive does) everything below it."""
        with self.lock:
            for target in [file_id, *self._descendants(file_id)]:
                self.files[target].trashed = True
                self._touch(target)

    def delete(self, file_id: str) -> None:
        """Permanent deletion; the change feed reports ``removed``."""
        with self.lock:
            for target in [*self._descendants(file_id), file_id]:
                drive = self.files[target].drive_id
                del self.files[target]
                self._seq += 1
                self.changes.append((self._seq, target, True, drive))

    def set_export_size(self, file_id: str, size: int) -> None:
        self.files[file_id].export_size = size

    def expire_page_tokens(self) -> None:
        """Every page token handed out so far now answers HTTP 410."""
        with self.lock:
            self._epoch += 1

    # ------------------------------------------------------------ faults
    def fail(
        self,
        count: int,
        status: int,
        reason: str | None = None,
        *,
        methods: set[str] | None = None,
        retry_after: int | None = None,
    ) -> None:
        """The next ``count`` API requests (of ``methods``) answer ``status``."""
        with self.lock:
            self._faults.append(
                _Fault(status, reason, frozenset(methods) if methods else None, count, retry_after)
            )

    def storm(self, requests: int) -> None:
        """For the next ``requests`` API requests, two of every three are refused with
        429, 403 ``userRateLimitExceeded``, 403 ``rateLimitExceeded`` or 503 in turn."""
        kinds = itertools.cycle(
            [
                (429, "rateLimitExceeded"),
                (403, "userRateLimitExceeded"),
                (403, "rateLimitExceeded"),
                (503, "backendError"),
            ]
        )
        with self.lock:
            for i in range(requests):
                status, reason = next(kinds) if i % 3 != 2 else (0, None)
                self._faults.append(_Fault(status, reason, None, 1))

    @property
    def faults_pending(self) -> int:
        with self.lock:
            return sum(f.remaining for f in self._faults)

    def cut_network_after(self, requests: int) -> None:
        """After ``requests`` more API requests, drop every connection without an answer."""
        with self.lock:
            self._cut_after = self.api_calls + requests

    def restore_network(self) -> None:
        with self.lock:
            self._cut_after = None
            self.network_down = False

    def _take_fault(self, method: str) -> _Fault | None:
        with self.lock:
            if self._cut_after is not None and self.api_calls > self._cut_after:
                self.network_down = True
            if self.network_down:
                return _Fault(0, None, None, 0, drop_connection=True)
            for fault in self._faults:
                if fault.remaining > 0 and (fault.methods is None or method in fault.methods):
                    fault.remaining -= 1
                    return fault if fault.status else None
            return None

    # ------------------------------------------------------------ API
    def _visible(self, f: FakeFile, params: dict[str, str], *, listing: bool) -> bool:
        if f.drive_id is None:
            return True
        key = "includeItemsFromAllDrives" if listing else "supportsAllDrives"
        return params.get(key) == "true"

    def list_files(self, params: dict[str, str]) -> dict[str, Any]:
        predicate = parse_query(params.get("q", ""))
        corpora = params.get("corpora", "user")
        with self.lock:
            items = [
                f
                for f in sorted(self.files.values(), key=lambda f: f.id)
                if f.id != self.root_id
                and self._visible(f, params, listing=True)
                and (corpora != "drive" or f.drive_id == params.get("driveId"))
                and predicate(f)
            ]
            size = min(int(params.get("pageSize", "100")), self.page_cap)
            start = int(params.get("pageToken", "o0")[1:])
            page = items[start : start + size]
            body: dict[str, Any] = {
                "kind": "drive#fileList",
                "files": [f.resource(self) for f in page],
            }
            if start + size < len(items):
                body["nextPageToken"] = f"o{start + size}"
            return body

    def page_token(self, seq: int | None = None) -> str:
        """``<epoch>.<first change number>``; :meth:`expire_page_tokens` bumps the epoch."""
        return f"{self._epoch}.{self._seq + 1 if seq is None else seq}"

    def list_changes(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        token = params.get("pageToken", "")
        epoch, _, seq_text = token.partition(".")
        if not (epoch.isdigit() and seq_text.isdigit()):
            return 400, _error(400, "Invalid Value", "invalid")
        start = int(seq_text)
        with self.lock:
            if int(epoch) != self._epoch:
                return 410, _error(410, "The page token is no longer valid.", "invalid")
            size = min(int(params.get("pageSize", "100")), self.page_cap)
            drive = params.get("driveId")
            all_drives = params.get("includeItemsFromAllDrives") == "true"
            out: list[dict[str, Any]] = []
            next_seq = self._seq + 1
            for seq, file_id, removed, file_drive in self.changes[start - 1 :]:
                if drive and file_drive != drive or file_drive and not all_drives:
                    continue
                if len(out) == size:
                    next_seq = seq
                    break
                change: dict[str, Any] = {
                    "kind": "drive#change",
                    "changeType": "file",
                    "fileId": file_id,
                    "removed": removed,
                }
                if not removed and file_id in self.files:
                    change["file"] = self.files[file_id].resource(self)
                elif not removed:
                    change["removed"] = True
                out.append(change)
            body: dict[str, Any] = {"kind": "drive#changeList", "changes": out}
            if next_seq <= self._seq:
                body["nextPageToken"] = self.page_token(next_seq)
            else:
                body["newStartPageToken"] = self.page_token()
            return 200, body

    def export(self, f: FakeFile, mime: str) -> tuple[int, Any, str]:
        if f.mime_type not in _EXPORTS:
            return (
                403,
                _error(403, "Only Google Docs Editors files can be exported.", "fileNotExportable"),
                "",
            )
        if mime not in _EXPORTS[f.mime_type]:
            return 400, _error(400, "The requested conversion is not supported.", "badRequest"), ""
        if (f.export_size or 0) > EXPORT_LIMIT_BYTES:
            return (
                403,
                _error(403, "This file is too large to be exported.", "exportSizeLimitExceeded"),
                "",
            )
        if mime == DOCX:
            return 200, _docx(f.content.decode()), mime
        if mime == XLSX:
            return 200, xlsx_bytes(dict(f.sheets or {})), mime
        if mime == "text/csv":
            first = next(iter((f.sheets or {"": []}).values()))
            return 200, "\n".join(",".join(map(str, r)) for r in first).encode(), mime
        return 200, f.content, mime


def _error(status: int, message: str, reason: str) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"domain": "global", "reason": reason, "message": message}],
        }
    }


def _docx(text: str) -> bytes:
    lines = [line for line in text.splitlines() if line.strip()]
    title = lines[0].removeprefix("# ") if lines else ""
    return docx_bytes(title, lines[1:])


# ---------------------------------------------------------------- query language
_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:\\.|[^'\\])*')|(?P<op>!=|=|\(|\))|(?P<word>[A-Za-z]+))")


def _tokens(query: str) -> Iterator[tuple[str, str]]:
    pos = 0
    query = query.strip()
    while pos < len(query):
        m = _TOKEN.match(query, pos)
        if not m:
            raise ValueError(f"bad query near {query[pos:]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        yield kind, value


def parse_query(query: str) -> Callable[[FakeFile], bool]:
    """Compile the ``q`` subset of Drive's query language into a predicate."""
    tokens = list(_tokens(query))
    pos = 0

    def peek() -> tuple[str, str] | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("unexpected end of query")
        pos += 1
        return tokens[pos - 1]

    def expr() -> Callable[[FakeFile], bool]:
        parts = [term()]
        while peek() == ("word", "or"):
            take()
            parts.append(term())
        return lambda f: any(p(f) for p in parts)

    def term() -> Callable[[FakeFile], bool]:
        parts = [factor()]
        while peek() == ("word", "and"):
            take()
            parts.append(factor())
        return lambda f: all(p(f) for p in parts)

    def factor() -> Callable[[FakeFile], bool]:
        kind, value = take()
        if (kind, value) == ("word", "not"):
            inner = factor()
            return lambda f: not inner(f)
        if (kind, value) == ("op", "("):
            inner = expr()
            if take() != ("op", ")"):
                raise ValueError("missing )")
            return inner
        if kind == "str":
            if take() != ("word", "in") or take() != ("word", "parents"):
                raise ValueError("only '<id>' in parents is supported")
            return lambda f: value in f.parents
        field_name, (_, op), (_, literal) = value, take(), take()
        getters: dict[str, Callable[[FakeFile], Any]] = {
            "trashed": lambda f: "true" if f.trashed else "false",
            "mimeType": lambda f: f.mime_type,
            "name": lambda f: f.name,
        }
        if field_name not in getters or op not in ("=", "!="):
            raise ValueError(f"unsupported condition {field_name} {op}")
        get = getters[field_name]
        return (lambda f: get(f) == literal) if op == "=" else (lambda f: get(f) != literal)

    if not tokens:
        return lambda f: True
    predicate = expr()
    if pos != len(tokens):
        raise ValueError("trailing tokens in query")
    return predicate


# ---------------------------------------------------------------- HTTP
def _handler_for(fake: DriveFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(
            self,
            status: int,
            body: Any,
            content_type: str = "application/json",
            headers: dict[str, str] | None = None,
        ) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            if urllib.parse.urlsplit(self.path).path != "/token":
                self._send(404, _error(404, "Not Found", "notFound"))
                return
            with fake.lock:
                fake.calls["token"] += 1
            error = self._grant(form)
            if error:
                self._send(400, {"error": "invalid_grant", "error_description": error})
                return
            token = "ya29." + base64.urlsafe_b64encode(
                hashlib.sha256(f"{time.time_ns()}{form}".encode()).digest()
            ).decode().rstrip("=")
            fake._access_tokens.add(token)
            self._send(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

        def _grant(self, form: dict[str, str]) -> str | None:
            if form.get("grant_type") == "refresh_token":
                client = fake._refresh_tokens.get(form.get("refresh_token", ""))
                if client != (form.get("client_id"), form.get("client_secret")):
                    return "Token has been expired or revoked."
                return None
            assertion = form.get("assertion", "")
            try:
                claims = jwt.decode(assertion, options={"verify_signature": False})
                key = fake._keys.get(claims.get("iss", ""))
                if key is None:
                    return "Invalid grant: account not found"
                jwt.decode(
                    assertion,
                    key,
                    algorithms=[
                        "RS256"
                    ],  # google-auth always signs for Google's endpoint, whatever token_uri says
                    audience=[f"{fake.url}/token", "https://oauth2.googleapis.com/token"],
                )
            except jwt.PyJWTError:
                return "Invalid JWT Signature."
            return None

        def do_GET(self) -> None:
            split = urllib.parse.urlsplit(self.path)
            params = dict(urllib.parse.parse_qsl(split.query))
            path = split.path.removeprefix("/drive/v3")
            method = self._method(path, params)
            with fake.lock:
                fake.calls[method] += 1
            fault = fake._take_fault(method)
            if fault and fault.drop_connection:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if (
                self.headers.get("Authorization", "").removeprefix("Bearer ")
                not in fake._access_tokens
            ):
                self._send(
                    401, _error(401, "Request had invalid authentication credentials.", "authError")
                )
                return
            if fault:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else None
                self._send(
                    fault.status,
                    _error(fault.status, "injected", fault.reason or "backendError"),
                    headers=headers,
                )
                return
            try:
                self._route(method, path, params)
            except ValueError as exc:
                self._send(400, _error(400, f"Invalid query: {exc}", "invalid"))

        @staticmethod
        def _method(path: str, params: dict[str, str]) -> str:
            if path == "/files":
                return "files.list"
            if path == "/changes/startPageToken":
                return "changes.getStartPageToken"
            if path == "/changes":
                return "changes.list"
            if path.endswith("/export"):
                return "files.export"
            if path.startswith("/files/"):
                return "files.get_media" if params.get("alt") == "media" else "files.get"
            return "unknown"

        def _route(self, method: str, path: str, params: dict[str, str]) -> None:
            if method == "files.list":
                self._send(200, fake.list_files(params))
            elif method == "changes.getStartPageToken":
                self._send(
                    200, {"kind": "drive#startPageToken", "startPageToken": fake.page_token()}
                )
            elif method == "changes.list":
                self._send(*fake.list_changes(params))
            elif method in ("files.get", "files.get_media", "files.export"):
                self._file(method, path.split("/")[2], params)
            else:
                self._send(404, _error(404, "Not Found", "notFound"))

        def _file(self, method: str, file_id: str, params: dict[str, str]) -> None:
            with fake.lock:
                f = fake.files.get(file_id)
                if (
                    f is None
                    or not fake._visible(f, params, listing=False)
                    and method != "files.export"
                ):
                    self._send(404, _error(404, f"File not found: {file_id}.", "notFound"))
                    return
                if method == "files.get":
                    self._send(200, f.resource(fake))
                elif method == "files.export":
                    status, body, mime = fake.export(f, params.get("mimeType", ""))
                    self._send(status, body, mime or "application/json")
                elif f.mime_type.startswith("application/vnd.google-apps."):
                    self._send(
                        403,
                        _error(
                            403,
                            "Only files with binary content can be downloaded.",
                            "fileNotDownloadable",
                        ),
                    )
                else:
                    self._send(200, f.content, f.mime_type)

    return Handler


# ---------------------------------------------------------------- client helpers
FAST_RETRY = RetryPolicy(attempts=6, base_seconds=0.001, max_seconds=0.01)
"""The production policy's shape with millisecond sleeps."""


def make_source(fake: DriveFake, folder_id: str, **kw: Any) -> GoogleDriveSource:
    clock = kw.pop("clock", None)
    settings = RagSettings(
        folder_id=folder_id,
        google_drive_credentials_json=SecretStr(json.dumps(fake.service_account())),
        google_drive_api_endpoint=fake.url,
        **kw,
    )
    source = GoogleDriveSource.from_settings(settings, retry=FAST_RETRY)
    if clock is not None:
        source._clock = clock
    return source


def by_id(result: ScanResult) -> dict[str, SourceFile]:
    return {f.source_id: f for f in result.files}
