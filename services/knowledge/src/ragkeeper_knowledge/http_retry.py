"""Retrying JSON POSTs to a remote model server: the embedding API and the reranking API.

Both clients talk to a server that rate-limits, restarts and times out, and both handle it
the same way, with the pieces here:

- :func:`post_json` sends one request and turns what may heal (408, 425, 429, 500, 502, 503,
  504, timeouts, connection errors) into :class:`RetryableFailure`, carrying the server's
  ``Retry-After`` (seconds or HTTP date) and its reason with the API key redacted; any other
  response is returned for the caller to judge;
- :class:`RetryPolicy` runs an attempt with ``tenacity`` until it succeeds, raises something
  else, or the policy gives up (attempts used up, or a ``Retry-After`` longer than the
  policy will wait), then raises :class:`RetriesExhausted`. Between attempts it waits the
  ``Retry-After`` exactly, else exponential backoff plus jitter, and logs the retry at
  WARNING with the URL and the reason;
- :func:`server_reason` reads the server's own explanation from whichever dialect of error
  body it sends (OpenAI, TEI, vLLM, FastAPI-style servers);
- :func:`gather_or_cancel` runs batches concurrently and cancels the rest when one fails.

Callers map :class:`RetriesExhausted` and the responses they refuse to their own errors
(``EmbeddingUnavailable``, ``RerankUnavailable`` ...).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base

__all__ = [
    "RETRYABLE_STATUS",
    "RetriesExhausted",
    "RetryPolicy",
    "RetryableFailure",
    "gather_or_cancel",
    "parse_retry_after",
    "post_json",
    "redact",
    "server_reason",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_REASON_CHARS = 500


class RetryableFailure(Exception):
    """One attempt failed in a way that may heal; internal to the retry loop."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class RetriesExhausted(Exception):
    """Every attempt failed (or the server asked for a longer wait than allowed)."""

    def __init__(self, reason: str, attempts: int) -> None:
        super().__init__(f"still failing after {attempts} attempt(s): {reason}")
        self.reason = reason
        self.attempts = attempts


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def server_reason(response: httpx.Response) -> str:
    """The server's own explanation, whichever dialect of error body it uses."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return (text or response.reason_phrase)[:_MAX_REASON_CHARS]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:_MAX_REASON_CHARS]  # OpenAI, Ollama
        if isinstance(error, str):
            return error[:_MAX_REASON_CHARS]  # TEI, older Ollama
        for key in ("message", "detail"):  # vLLM, Cohere, FastAPI-style servers
            if isinstance(body.get(key), str):
                return str(body[key])[:_MAX_REASON_CHARS]
    return str(body)[:_MAX_REASON_CHARS]


def redact(message: str, secret: str | None) -> str:
    """``message`` with ``secret`` replaced (servers sometimes echo the key they refused)."""
    return message.replace(secret, "***") if secret else message


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    api_key: str | None,
    timeout: httpx.Timeout,
) -> httpx.Response:
    """POST ``payload``; what may heal raises :class:`RetryableFailure`, the rest is returned.

    The key goes only into the ``Authorization: Bearer`` header (none without a key), and
    is redacted from every reason this function puts into an exception.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = await client.post(url, json=payload, headers=headers, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise RetryableFailure(f"timeout ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        reason = redact(f"connection error ({type(exc).__name__}: {exc})", api_key)
        raise RetryableFailure(reason) from exc
    if response.status_code in RETRYABLE_STATUS:
        raise RetryableFailure(
            f"HTTP {response.status_code}: {redact(server_reason(response), api_key)}",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    return response


class _WaitRetryAfter(wait_base):
    """Wait what the server asked for, else exponential backoff with jitter.

    Backoff for attempt ``n`` is ``min(initial * 2**(n-1) + uniform(0, jitter), max)``
    (computed here rather than with ``wait_exponential_jitter``, whose parameters
    changed across tenacity releases).
    """

    def __init__(self, initial: float, maximum: float, jitter: float) -> None:
        self._initial = initial
        self._maximum = maximum
        self._jitter = jitter

    def __call__(self, retry_state: RetryCallState) -> float:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(failure, RetryableFailure) and failure.retry_after is not None:
            return failure.retry_after
        exponent = min(retry_state.attempt_number - 1, 32)
        # Jitter only spreads clients out; it needs no cryptographic randomness.
        jitter = random.uniform(0.0, self._jitter)  # nosec B311
        return min(self._initial * 2.0**exponent + jitter, self._maximum)


class _StopOnLongRetryAfter(stop_base):
    """Stop when the server asks us to come back later than we are willing to wait."""

    def __init__(self, limit_seconds: float) -> None:
        self._limit = limit_seconds

    def __call__(self, retry_state: RetryCallState) -> bool:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        return (
            isinstance(failure, RetryableFailure)
            and failure.retry_after is not None
            and failure.retry_after > self._limit
        )


class RetryPolicy:
    """How a client retries: attempts, backoff, the longest ``Retry-After`` it waits out.

    Args:
        max_retries: retries after the first attempt.
        backoff_initial_seconds / backoff_max_seconds / backoff_jitter_seconds:
            exponential backoff when the server sends no ``Retry-After``.
        max_retry_after_seconds: a longer ``Retry-After`` ends the retries at once.
        sleep: coroutine used to wait between attempts (tests record the waits).
        label: what is retried, for the log line (``embedding``, ``rerank``).
    """

    def __init__(
        self,
        *,
        max_retries: int,
        backoff_initial_seconds: float,
        backoff_max_seconds: float,
        backoff_jitter_seconds: float,
        max_retry_after_seconds: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        label: str,
    ) -> None:
        self.max_attempts = max_retries + 1
        self._wait = _WaitRetryAfter(
            backoff_initial_seconds, backoff_max_seconds, backoff_jitter_seconds
        )
        self._max_retry_after = max_retry_after_seconds
        self._sleep = sleep
        self._label = label

    async def call(self, attempt: Callable[[], Awaitable[T]], *, url: str) -> T:
        """``await attempt()`` until it returns; :class:`RetriesExhausted` when the policy
        gives up on :class:`RetryableFailure`. Any other exception passes through at once."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RetryableFailure),
            stop=stop_after_attempt(self.max_attempts)
            | _StopOnLongRetryAfter(self._max_retry_after),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=lambda state: self._log_retry(state, url),
            reraise=True,
        )
        try:
            async for attempt_context in retrying:
                with attempt_context:
                    return await attempt()
        except RetryableFailure as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise RetriesExhausted(exc.reason, attempts) from exc
        raise AssertionError("unreachable: tenacity either returned or raised")

    def _log_retry(self, retry_state: RetryCallState, url: str) -> None:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.warning(
            "%s request to %s failed (%s); attempt %d of %d, retrying in %.2fs",
            self._label,
            url,
            failure,
            retry_state.attempt_number,
            self.max_attempts,
            delay,
        )


async def gather_or_cancel(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Like ``asyncio.gather`` but cancels the siblings when one fails.

    ``asyncio.TaskGroup`` would wrap our typed errors in an ``ExceptionGroup``,
    which the ingestion job's exit-code mapping would no longer recognise.
    """
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
