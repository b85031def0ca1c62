"""Blocking Drive v3 calls made safe for an asyncio job: threads, retries, error types.

googleapiclient and httplib2 objects are not thread-safe, so every worker thread
of a small private pool builds its own credentials, ``AuthorizedHttp`` and
service (from the discovery document bundled with the client, never fetched).
The event loop hands each call to that pool; the pool size bounds concurrency.

Each call is retried by tenacity with exponential backoff and full jitter (and
at least the server's ``Retry-After``) when Drive says *slow down or try again*:
HTTP 429, 403 with a rate-limit reason, 5xx, and connection failures.

Errors leave this module as the job's own types::

    CredentialsError        401, 403 accessNotConfigured, token endpoint refusal
    TransientError          network down / token endpoint unreachable after retries
    └── DriveHttpError      any other HTTP status after retries; callers narrow it
                            (404 root -> configuration, 410 token -> full listing,
                            per-file failure -> FileSkipped)
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import logging
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import google_auth_httplib2
import httplib2
from google.auth import exceptions as gexc
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from tenacity import RetryCallState, Retrying, retry_if_exception

from ragkeeper_rag.errors import CredentialsError, TransientError
from ragkeeper_rag.sources.drive_auth import CredentialsSource, describe_refresh_error

log = logging.getLogger(__name__)

RATE_LIMIT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"}
)
DISABLED_REASONS = frozenset({"accessNotConfigured", "SERVICE_DISABLED"})
_NETWORK_ERRORS = (OSError, httplib2.HttpLib2Error, http.client.HTTPException, gexc.TransportError)


class DriveHttpError(TransientError):
    """Drive answered with an HTTP error status (after any retries)."""

    def __init__(self, kind: str, status: int, reasons: frozenset[str], message: str) -> None:
        super().__init__(f"Drive {kind} failed: HTTP {status} {message}".strip())
        self.kind = kind
        self.status = status
        self.reasons = reasons


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff knobs; tests shrink the delays, production keeps the defaults."""

    attempts: int = 7
    """Tries per call when Drive asks to slow down (429, 403 rate limit, 5xx)."""
    network_attempts: int = 3
    """Tries when the API cannot be reached at all: fail fast, the CronJob re-runs."""
    base_seconds: float = 1.0
    max_seconds: float = 64.0


def api_base_url(endpoint: str | None) -> str | None:
    """Normalise ``GOOGLE_DRIVE_API_ENDPOINT`` to the client's base URL.

    Accepts an API root (``https://private.googleapis.com``) or the full service
    URL (``.../drive/v3/``); the client needs the latter with a trailing slash.
    """
    if not endpoint:
        return None
    base = endpoint.rstrip("/")
    if not urlsplit(base).path.rstrip("/").endswith("drive/v3"):
        base += "/drive/v3"
    return base + "/"


def error_reasons(exc: HttpError) -> frozenset[str]:
    """The ``reason`` values of a Google JSON error body (old ``errors`` and new ``details``)."""
    try:
        body = json.loads(exc.content.decode("utf-8"))
        error = body["error"]
    except (ValueError, KeyError, TypeError):
        return frozenset()
    reasons: set[str] = set()
    for key in ("errors", "details"):
        items = error.get(key) if isinstance(error, dict) else None
        if isinstance(items, list):
            reasons.update(str(i["reason"]) for i in items if isinstance(i, dict) and "reason" in i)
    return frozenset(reasons)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, HttpError):
        status = exc.status_code
        if status == 429 or status >= 500:
            return True
        return status == 403 and bool(error_reasons(exc) & RATE_LIMIT_REASONS)
    if isinstance(exc, gexc.RefreshError):
        return bool(exc.retryable)
    return isinstance(exc, _NETWORK_ERRORS)


class DriveApi:
    """Runs Drive requests on a bounded thread pool with per-thread clients."""

    def __init__(
        self,
        credentials: CredentialsSource,
        *,
        endpoint: str | None = None,
        max_workers: int = 4,
        retry: RetryPolicy | None = None,
        timeout_seconds: float = 120.0,
    ) -> None:
        self.credentials = credentials
        self._base = api_base_url(endpoint)
        self._retry = retry or RetryPolicy()
        self._timeout = timeout_seconds
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="drive")
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self.calls: Counter[str] = Counter()
        """Requests sent per method (retries included), for logs and the benchmark."""

    async def call(self, method: str, **params: Any) -> Any:
        """Run one Drive request on the pool, with retries, and return its result.

        Args:
            method: ``resource.method`` of the discovery document (``files.list``,
                ``files.get_media``...); also the key of :attr:`calls`.
            params: the method's parameters.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self._call_blocking, method, params)
        )

    async def aclose(self) -> None:
        """Stop the pool and close every keep-alive connection its threads opened."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _service(self) -> Any:
        service = getattr(self._local, "service", None)
        if service is None:
            connection = httplib2.Http(timeout=self._timeout)
            with self._lock:
                self._connections.append(connection)
            authorized = google_auth_httplib2.AuthorizedHttp(
                self.credentials.build(), http=connection
            )
            options = {"api_endpoint": self._base} if self._base else None
            service = build(
                "drive",
                "v3",
                http=authorized,
                static_discovery=True,
                cache_discovery=False,
                client_options=options,
            )
            self._local.service = service
        return service

    def _stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        network = isinstance(exc, _NETWORK_ERRORS)
        limit = self._retry.network_attempts if network else self._retry.attempts
        return state.attempt_number >= limit

    def _wait(self, state: RetryCallState) -> float:
        policy = self._retry
        ceiling = min(policy.max_seconds, policy.base_seconds * 2 ** (state.attempt_number - 1))
        # full jitter; not a security use of randomness
        delay = random.uniform(0, ceiling)  # nosec B311
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, HttpError):
            retry_after = exc.resp.get("retry-after", "")
            if retry_after.isdigit():
                delay = max(delay, min(float(retry_after), policy.max_seconds))
        return delay

    def _before_sleep(self, kind: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        what = f"HTTP {exc.status_code}" if isinstance(exc, HttpError) else type(exc).__name__
        log.warning(
            "drive call retried: %s attempt %s got %s, sleeping %.2fs",
            kind,
            state.attempt_number,
            what,
            state.next_action.sleep if state.next_action else 0.0,
        )

    def _count(self, kind: str) -> None:
        with self._lock:
            self.calls[kind] += 1

    def _call_blocking(self, kind: str, params: dict[str, Any]) -> Any:
        resource, method = kind.split(".")
        retrying = Retrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            before_sleep=functools.partial(self._before_sleep, kind),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._count(kind)
                    service = self._service()
                    request = getattr(getattr(service, resource)(), method)(**params)
                    return request.execute(num_retries=0)
        except HttpError as exc:
            raise self._narrow(kind, exc) from exc
        except gexc.RefreshError as exc:
            if exc.retryable:
                raise TransientError("Google token endpoint unavailable after retries") from None
            raise CredentialsError(describe_refresh_error(exc, self.credentials)) from None
        except _NETWORK_ERRORS as exc:
            raise TransientError(
                f"Drive API unreachable during {kind}: {type(exc).__name__}"
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or reraises")

    def _narrow(self, kind: str, exc: HttpError) -> Exception:
        status = exc.status_code
        reasons = error_reasons(exc)
        principal = self.credentials.principal
        if status == 401:
            return CredentialsError(
                f"Drive API rejected the access token of {principal} (HTTP 401)"
            )
        if status == 403 and reasons & DISABLED_REASONS:
            return CredentialsError(
                f"the Drive API is not enabled for the Google Cloud project of {principal}"
            )
        return DriveHttpError(kind, status, reasons, str(exc.reason)[:200])
