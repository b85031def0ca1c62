"""Exceptions the agent service raises on purpose, mapped to HTTP statuses in one place.

::

    AgentServiceError                 status 500
    ├── AuthenticationError           401  missing, malformed, expired or unverifiable token
    │   └── JWKSUnavailable           503  the key set could not be fetched (not the caller's fault)
    ├── PermissionDenied              403  the token's subject may not act as the body's user_id
    ├── NotFound                      404  no such conversation *for this user*
    ├── RateLimited                   429  too many requests in the sliding window (Retry-After)
    ├── RequestTooLarge               413  body over MAX_REQUEST_BYTES
    ├── UpstreamError                 502  the language model failed before the stream started
    ├── Unavailable                   503  a dependency is down, or shutting down (Retry-After)
    └── SQLToolError                  raised by the read-only SQL executor; becomes ModelRetry
        └── SQLRejected               the database refused the query (privilege, read-only, syntax)

Handlers catch the base class and use ``status_code``; nothing matches message text.
:func:`too_long` is the 422 of a length limit that is a setting, in the same shape as the
schemas' own refusals (FastAPI's ``RequestValidationError``).

:func:`as_outage` decides, by exception type alone, which failures of a dependency are an outage
(503 with ``Retry-After``, "try again shortly") rather than a bug or the caller's own input: the
database unreachable, restarting or out of connections, the embedding API down after its
retries, the language model's provider unreachable, overloaded or failing with a 5xx. The app's
exception handlers and the chat routes (before and after a stream started) both ask it, so the
same failure gets the same answer on every route. Any other database error is not an outage.
"""

from __future__ import annotations

import math

import asyncpg
import httpx
from fastapi.exceptions import RequestValidationError
from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelConnectionError,
    ModelHTTPError,
    ModelRateLimitError,
    ModelRequestTimeout,
    ModelServerError,
    ModelUnavailableError,
)

from ragkeeper_knowledge.errors import TransientError

RETRY_AFTER_SECONDS = 5
"""What a 503 asks the client to wait: an outage's first success comes about this soon after the
dependency is back (the pool reconnects on the next request, nothing is cached as broken)."""
MAX_RETRY_AFTER_SECONDS = 60


class AgentServiceError(Exception):
    status_code = 500
    headers: dict[str, str] | None = None


class AuthenticationError(AgentServiceError):
    status_code = 401
    headers: dict[str, str] | None = {"WWW-Authenticate": "Bearer"}


class JWKSUnavailable(AuthenticationError):
    status_code = 503
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class PermissionDenied(AgentServiceError):
    status_code = 403


class NotFound(AgentServiceError):
    status_code = 404


class RequestTooLarge(AgentServiceError):
    status_code = 413


class UpstreamError(AgentServiceError):
    status_code = 502


class Unavailable(AgentServiceError):
    status_code = 503

    def __init__(self, message: str, *, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class RateLimited(AgentServiceError):
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded; retry in {retry_after} s")
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


def too_long(loc: tuple[str | int, ...], limit: int, setting: str) -> RequestValidationError:
    """422 for text over a limit that is a setting, naming the field as the schema's own
    limits do (and, like the text rule, without echoing the text)."""
    return RequestValidationError(
        [
            {
                "type": "string_too_long",
                "loc": loc,
                "msg": f"String should have at most {limit} characters ({setting})",
                "ctx": {"max_length": limit},
            }
        ]
    )


class SQLToolError(AgentServiceError):
    """The SQL tool could not run a query."""


class SQLRejected(SQLToolError):
    """Postgres refused the query: the model can fix it and try again."""


DATABASE_OUTAGES: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,  # class 08: connection lost, refused, failed
    asyncpg.AdminShutdownError,  # 57P01: the server is stopping (fast/smart shutdown)
    asyncpg.CrashShutdownError,  # 57P02: the server is restarting after a crash
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.TooManyConnectionsError,  # 53300: no connection slot free
)
"""Database errors that say the server is unreachable or refusing connections, not that a
query or its input is wrong."""

DRIVER_STATE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.InterfaceError,  # "the underlying connection is closed", "pool is closing"
    asyncpg.InternalClientError,  # a connection that died mid-operation, used again
)
"""asyncpg's client-side errors about a connection's state, raised when the server goes away
under a connection in use. Matched by exact type: their subclasses are not outages (the
client-side ``DataError`` is the caller's input failing to encode, ``ProtocolError`` a bug)."""

NOT_OUTAGES: tuple[type[Exception], ...] = (
    asyncpg.ProtocolViolationError,  # class 08, but a client/server protocol bug
)

HTTP_OUTAGES: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,  # the server closed the connection mid-response
)

MODEL_OUTAGES: tuple[type[Exception], ...] = (
    ModelConnectionError,  # refused, reset or timed out (ModelTimeoutError), a dropped stream
    ModelUnavailableError,  # 503, overloaded (529)
    ModelServerError,  # other 5xx
    ModelRateLimitError,  # 429: the provider asks us to wait
    ModelRequestTimeout,  # our own deadline over all attempts
)

OUTAGE_TYPES: tuple[type[Exception], ...] = (
    *DATABASE_OUTAGES,
    OSError,  # connecting: refused, no such socket, no route; TimeoutError (pool acquire)
    TransientError,  # the knowledge package's own: database or embedding API unreachable
    *HTTP_OUTAGES,
    *MODEL_OUTAGES,
    ModelHTTPError,  # only its 429 and 5xx (see as_outage)
)
"""The types :func:`as_outage` accepts with their subclasses (less ``NOT_OUTAGES``)."""

HANDLED_TYPES: tuple[type[Exception], ...] = (*OUTAGE_TYPES, *DRIVER_STATE_ERRORS)
"""Every type :func:`as_outage` may accept; the app registers its handler for these."""

_LABELS: tuple[tuple[tuple[type[Exception], ...], str], ...] = (
    ((*DATABASE_OUTAGES, *DRIVER_STATE_ERRORS, OSError), "the database is unavailable"),
    ((TransientError, *HTTP_OUTAGES), "a dependency is unavailable"),
    ((ModelAPIError,), "the language model is unavailable"),
)


def _is_outage(exc: BaseException) -> bool:
    if type(exc) in DRIVER_STATE_ERRORS:
        return True
    if isinstance(exc, NOT_OUTAGES):
        return False
    if isinstance(exc, ModelHTTPError) and not isinstance(exc, MODEL_OUTAGES):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, OUTAGE_TYPES)


def _retry_after(exc: BaseException) -> int:
    """The provider's own ``Retry-After`` when it sent one (bounded), else the default."""
    asked = exc.retry_after if isinstance(exc, ModelAPIError) else None
    if asked is not None and asked > 0:
        return min(max(math.ceil(asked), 1), MAX_RETRY_AFTER_SECONDS)
    return RETRY_AFTER_SECONDS


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def as_outage(exc: BaseException) -> Unavailable | None:
    """The 503 an outage deserves, or None when ``exc`` is not a dependency being down.

    By type only, never by message. An exception group (tools run concurrently) is an outage
    when any of its exceptions is one.
    """
    for leaf in _leaves(exc):
        if _is_outage(leaf):
            label = next(
                (text for types, text in _LABELS if isinstance(leaf, types)),
                "a dependency is unavailable",
            )
            return Unavailable(
                f"{label} ({type(leaf).__name__}); retry shortly", retry_after=_retry_after(leaf)
            )
    return None
