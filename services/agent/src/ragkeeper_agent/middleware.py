"""Pure-ASGI middleware: request id, access log + HTTP metrics, a body size limit, and the
text rule (``text.py``) for query parameters and JSON bodies.

Pure ASGI (not ``BaseHTTPMiddleware``) so streamed responses pass through
untouched and the duration metric covers the whole stream. The route label is
the matched route *template* (``/api/conversations/{session_id}/messages``), never
the raw path, to keep label cardinality bounded.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .audit import RequestContext, request_context_var
from .logs import request_id_var
from .metrics import HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS
from .text import MAX_JSON_DEPTH, Loc, json_may_be_refused, json_problems, text_problem

logger = logging.getLogger("ragkeeper_agent.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def send_json_error(send: Send, status: int, detail: str | list[dict[str, Any]]) -> None:
    """Answer ``{"detail": ...}`` straight over ASGI, for middleware that cannot use the app."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ObservabilityMiddleware:
    """Sets the request id (``X-Request-ID`` in and out), logs and counts every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        context_token = request_context_var.set(RequestContext(scope))
        status = 500
        started = time.perf_counter()
        HTTP_IN_FLIGHT.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            HTTP_IN_FLIGHT.dec()
            elapsed = time.perf_counter() - started
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_DURATION.labels(method, template, str(status)).observe(elapsed)
            if template not in ("/healthz", "/readyz", "/metrics"):
                logger.info(
                    "%s %s %s %.1f ms",
                    method,
                    scope["path"],
                    status,
                    elapsed * 1000,
                    extra={"route": template, "status": status, "duration_seconds": elapsed},
                )
            request_context_var.reset(context_token)
            request_id_var.reset(token)


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; FastAPI re-raises HTTPExceptions met while reading a body."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body exceeds {max_bytes} bytes")


class BodySizeLimitMiddleware:
    """Answers 413 when a request body is over its limit (declared or actually sent):
    ``max_bytes``, or the larger limit ``path_limits`` gives its path (the chat route, whose
    body carries attached files).

    It is the gate every request's input passes: the request then goes through
    :class:`RequestTextMiddleware` (the text rule), which it wraps itself, so the text is
    checked wherever the size is and only in bodies within the limit.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, path_limits: dict[str, int] | None = None
    ) -> None:
        self.app = RequestTextMiddleware(app)
        self.max_bytes = max_bytes
        self.path_limits = path_limits or {}

    async def _reject(self, send: Send, limit: int) -> None:
        await send_json_error(send, 413, f"request body exceeds {limit} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.max_bytes)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send, limit)


# At most this many refusals are listed in one answer.
MAX_TEXT_ERRORS = 10


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI parses this request's body as JSON (no type, ``*/json``, ``*+json``)."""
    content_type = _header(scope, b"content-type")
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("application/") and media.endswith(("/json", "+json"))


def _error(kind: str, loc: Loc, problem: str) -> dict[str, Any]:
    """One entry in FastAPI's validation error shape; the refused input is not echoed."""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:]).lstrip(".")
    return {"type": kind, "loc": list(loc), "msg": f"{where or loc[0]} {problem}"}


def _query_errors(scope: Scope) -> Iterator[dict[str, Any]]:
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        for text, what in ((name, "name"), (value, "value")):
            problem = text_problem(text)
            if problem is not None:
                shown = name if what == "value" else name.encode("unicode_escape").decode()
                yield _error("text_refused", ("query", shown), f"{what} {problem}")


def _undecodable(body: bytes) -> dict[str, Any] | None:
    """The error for a body the JSON parser cannot decode (it reads UTF-8, -16 or -32, and
    lets encoded surrogates through for the text rule to name), which FastAPI would answer
    with a bare 400 instead of its 422 for malformed JSON."""
    encoding = json.detect_encoding(body)  # from the first four bytes
    if encoding == "utf-8" and body.isascii():
        return None
    try:
        body.decode(encoding, "surrogatepass")
    except UnicodeDecodeError as exc:
        return _error("json_invalid", ("body",), f"is not valid {encoding} (byte {exc.start})")
    return None


def _body_errors(body: bytes) -> list[dict[str, Any]]:
    too_deep = _error(
        "json_too_deep",
        ("body",),
        f"nests arrays and objects more than {MAX_JSON_DEPTH} levels deep",
    )
    undecodable = _undecodable(body)
    if undecodable is not None:
        return [undecodable]
    if not json_may_be_refused(body):
        return []  # certain from the bytes: the body is parsed once, by FastAPI
    try:
        parsed = json.loads(body)
    except RecursionError:  # the parser's own guard, within a millisecond at any depth
        return [too_deep]
    except ValueError:
        return []  # not JSON: FastAPI answers it (json_invalid)
    errors = []
    for loc, problem in json_problems(parsed, ("body",)):
        kind = "json_too_deep" if problem.startswith("nests") else "text_refused"
        errors.append(_error(kind, loc, problem))
        if len(errors) == MAX_TEXT_ERRORS:
            break
    return errors


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole body, and the message that ended it early (the client went away) if any."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


class RequestTextMiddleware:
    """Answers 422 when a query parameter or a JSON body breaks the text rule (``text.py``).

    Every key and string of a JSON body, at any depth and in any field (known to the schema
    or not), is checked, and so is its nesting (a body too deep to parse is refused too).
    The body (already bounded by :class:`BodySizeLimitMiddleware`, which sits outside) is read
    here and handed on unchanged. Path parameters are checked by their routes' types.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        http = scope["type"] == "http"
        errors = list(_query_errors(scope))[:MAX_TEXT_ERRORS] if http else []
        if errors:
            await send_json_error(send, 422, errors)
            return
        if not (http and _is_json(scope)):
            await self.app(scope, receive, send)
            return
        body, last = await _read_body(receive)
        errors = _body_errors(body) if body else []
        if errors:
            await send_json_error(send, 422, errors)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": last is not None}
            if last is not None:
                return last
            return await receive()

        await self.app(scope, replay, send)
