"""Who called, from where, and the audit log of refusals.

The client's address is decided in one place: the socket peer (``scope["client"]``), which
uvicorn's ``ProxyHeadersMiddleware`` (added by the app factory, outermost, only when
``TRUSTED_PROXIES`` is set) replaces with the right-most address of ``X-Forwarded-For`` that
is not itself a trusted proxy, and only when the peer is one. uvicorn's own proxy handling is
off (``__main__``), so a forged header from anyone else is ignored.

The audit log is the ``ragkeeper.audit`` logger: one JSON object per line (``logs.py``'s
formatter, whatever ``LOG_FORMAT`` says) for each authentication failure (401), forbidden
access (403), rate-limit rejection (429) and SQL-tool refusal, with the request id, the user
id when known, the client IP, the route and the reason. It never carries a token, a prompt
or the SQL text: a refused query is logged as its SHA-256 prefix and length.
"""

from __future__ import annotations

import hashlib
import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.types import Scope

from .logs import AUDIT_LOGGER, request_id_var

audit_logger = logging.getLogger(AUDIT_LOGGER)

AuditEvent = Literal["auth_failed", "forbidden", "rate_limited", "sql_refused"]


def client_ip(scope: Scope) -> str:
    """The caller's address (already resolved through trusted proxies), or ``unknown``."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


@dataclass(slots=True)
class RequestContext:
    """Set by the HTTP middleware for each request; the principal's user id is added once
    authentication succeeds. Mutable, so tasks that copied the context still see it."""

    scope: Scope = field(repr=False)
    user_id: str | None = None

    @property
    def client_ip(self) -> str:
        return client_ip(self.scope)

    @property
    def route(self) -> str:
        """The matched route template, or the raw path before routing."""
        return str(getattr(self.scope.get("route"), "path", None) or self.scope.get("path", ""))


request_context_var: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)


def current_client_ip() -> str:
    context = request_context_var.get()
    return context.client_ip if context is not None else "unknown"


def set_user(user_id: str) -> None:
    context = request_context_var.get()
    if context is not None:
        context.user_id = user_id


def fingerprint(text: str) -> dict[str, Any]:
    """What the audit log may say about a text: a hash prefix and its length."""
    return {"sha256": hashlib.sha256(text.encode()).hexdigest()[:16], "chars": len(text)}


def audit(event: AuditEvent, reason: str, **fields: Any) -> None:
    """Write one audit line for the request being served."""
    context = request_context_var.get()
    audit_logger.warning(
        event,
        extra={
            "event": event,
            "request_id": request_id_var.get(),
            "user_id": context.user_id if context is not None else None,
            "client_ip": context.client_ip if context is not None else "unknown",
            "route": context.route if context is not None else None,
            "reason": reason,
            **fields,
        },
    )


STATUS_EVENTS: dict[int, AuditEvent] = {401: "auth_failed", 403: "forbidden", 429: "rate_limited"}
