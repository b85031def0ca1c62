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
    ├── Unavailable                   503  database or embedder unreachable, or shutting down
    └── SQLToolError                  raised by the read-only SQL executor; becomes ModelRetry
        └── SQLRejected               the database refused the query (privilege, read-only, syntax)

Handlers catch the base class and use ``status_code``; nothing matches message text.
"""

from __future__ import annotations


class AgentServiceError(Exception):
    status_code = 500
    headers: dict[str, str] | None = None


class AuthenticationError(AgentServiceError):
    status_code = 401
    headers: dict[str, str] | None = {"WWW-Authenticate": "Bearer"}


class JWKSUnavailable(AuthenticationError):
    status_code = 503
    headers = None


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


class RateLimited(AgentServiceError):
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded; retry in {retry_after} s")
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class SQLToolError(AgentServiceError):
    """The SQL tool could not run a query."""


class SQLRejected(SQLToolError):
    """Postgres refused the query: the model can fix it and try again."""
