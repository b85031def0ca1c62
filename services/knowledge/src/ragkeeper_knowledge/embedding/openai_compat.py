"""Embeddings from any server that speaks OpenAI's ``POST /embeddings``.

OpenAI itself, Ollama (``/v1``), vLLM and Hugging Face TEI (its OpenAI route)
all accept ``{"model": ..., "input": [...]}`` and answer
``{"data": [{"index": i, "embedding": [...]}, ...]}``, so one client serves
them all. The server is a remote dependency that rate-limits, restarts and
times out, so this client:

- splits input into batches of ``batch_size`` and keeps at most
  ``max_concurrency`` requests in flight (an ``asyncio.Semaphore``);
- retries 408/425/429/5xx, timeouts and connection errors with exponential
  backoff plus jitter (``tenacity``), waiting exactly ``Retry-After`` when the
  server sends one, and giving up early when that wait exceeds
  ``max_retry_after_seconds``;
- re-orders every response by ``index`` (servers may answer out of order);
- learns the dimension from the first response unless it was configured, and
  refuses a server whose vectors do not match it.

Errors: :class:`~ragkeeper_knowledge.errors.EmbeddingUnavailable` once retries
are exhausted (transient: the ingestion job exits 1 and the next scheduled run
tries again), :class:`~ragkeeper_knowledge.errors.EmbeddingError` for any other
4xx, carrying the server's own reason, and
:class:`~ragkeeper_knowledge.errors.ConfigurationError` for a dimension mismatch.
The API key is sent only in the ``Authorization`` header; it never appears in
logs, reprs or exception messages.
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

from ragkeeper_knowledge.errors import (
    ConfigurationError,
    EmbeddingCredentialsError,
    EmbeddingError,
    EmbeddingUnavailable,
)

__all__ = ["OpenAICompatibleEmbedder"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_REASON_CHARS = 500


class _RetryableFailure(Exception):
    """One attempt failed in a way that may heal; internal to the retry loop."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _parse_retry_after(value: str | None) -> float | None:
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


def _server_reason(response: httpx.Response) -> str:
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
        for key in ("message", "detail"):  # vLLM, FastAPI-style servers
            if isinstance(body.get(key), str):
                return str(body[key])[:_MAX_REASON_CHARS]
    return str(body)[:_MAX_REASON_CHARS]


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
        if isinstance(failure, _RetryableFailure) and failure.retry_after is not None:
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
            isinstance(failure, _RetryableFailure)
            and failure.retry_after is not None
            and failure.retry_after > self._limit
        )


async def _gather_or_cancel(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
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


class OpenAICompatibleEmbedder:
    """Embedder for any OpenAI-compatible ``/embeddings`` endpoint.

    Args:
        base_url: API root including the version, e.g. ``https://api.openai.com/v1``
            or ``http://ollama:11434/v1``; ``/embeddings`` is appended.
        model: model name as the server knows it.
        api_key: sent as ``Authorization: Bearer``; ``None`` sends no header.
        provider: label used in :attr:`model_name` (``openai``, ``ollama``...).
        dimension: expected vector length; ``None`` learns it from the first response.
        send_dimensions: also send ``dimensions`` in the request (OpenAI's
            ``text-embedding-3-*`` can shorten vectors; other servers may reject it).
        batch_size: texts per request.
        max_concurrency: requests in flight at once.
        timeout_seconds: per-request timeout (connect, read, write, pool).
        max_retries: retries after the first attempt for transient failures.
        backoff_initial_seconds / backoff_max_seconds / backoff_jitter_seconds:
            exponential backoff parameters when the server sends no ``Retry-After``.
        max_retry_after_seconds: a longer ``Retry-After`` fails fast instead of waiting.
        client: an ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`).
        transport: transport for the client this embedder creates (tests).
        sleep: coroutine used to wait between attempts (tests record the waits).
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        provider: str = "openai",
        dimension: int | None = None,
        send_dimensions: bool = False,
        batch_size: int = 64,
        max_concurrency: int = 4,
        timeout_seconds: float = 30.0,
        max_retries: int = 5,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        backoff_jitter_seconds: float = 1.0,
        max_retry_after_seconds: float = 120.0,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if batch_size < 1 or max_concurrency < 1 or max_retries < 0 or timeout_seconds <= 0:
            raise ConfigurationError(
                "batch_size and max_concurrency must be >= 1, max_retries >= 0, timeout > 0"
            )
        if dimension is not None and dimension < 1:
            raise ConfigurationError(f"embedding dimension must be positive, got {dimension}")
        if send_dimensions and dimension is None:
            raise ConfigurationError("send_dimensions needs a configured dimension")
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._provider = provider
        self._api_key = api_key or None
        self._dimension = dimension
        self._send_dimensions = send_dimensions
        self._batch_size = batch_size
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._max_attempts = max_retries + 1
        self._wait = _WaitRetryAfter(
            backoff_initial_seconds, backoff_max_seconds, backoff_jitter_seconds
        )
        self._max_retry_after = max_retry_after_seconds
        self._sleep = sleep
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_seconds),
            headers={"User-Agent": "ragkeeper-knowledge"},
        )
        self._timeout = httpx.Timeout(timeout_seconds)

    # -- Embedder protocol -------------------------------------------------

    @property
    def model_name(self) -> str:
        return f"{self._provider}:{self._model}"

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            raise ConfigurationError(
                f"the dimension of {self.model_name} is not known before its first response: "
                "set EMBEDDING_DIMENSION, or await ensure_dimension(embedder) first"
            )
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        batches = [
            list(texts[start : start + self._batch_size])
            for start in range(0, len(texts), self._batch_size)
        ]
        results = await _gather_or_cancel([self._embed_batch(batch) for batch in batches])
        return [vector for batch_vectors in results for vector in batch_vectors]

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed([text]))[0]

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # -- extras ------------------------------------------------------------

    async def probe_dimension(self) -> int:
        """Return the dimension, asking the server once if it was not configured."""
        if self._dimension is None:
            await self.embed(["dimension probe"])
        return self.dimension

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"OpenAICompatibleEmbedder(url={self._url!r}, model={self._model!r}, api_key={key})"

    # -- internals ---------------------------------------------------------

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_RetryableFailure),
            stop=stop_after_attempt(self._max_attempts)
            | _StopOnLongRetryAfter(self._max_retry_after),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._post(batch)
        except _RetryableFailure as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise EmbeddingUnavailable(
                f"embedding service {self._url} still failing after {attempts} attempt(s): "
                f"{exc.reason}"
            ) from exc
        raise AssertionError("unreachable: tenacity either returned or raised")

    def _log_retry(self, retry_state: RetryCallState) -> None:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.warning(
            "embedding request to %s failed (%s); attempt %d of %d, retrying in %.2fs",
            self._url,
            failure,
            retry_state.attempt_number,
            self._max_attempts,
            delay,
        )

    def _redact(self, message: str) -> str:
        return message.replace(self._api_key, "***") if self._api_key else message

    async def _post(self, batch: list[str]) -> list[list[float]]:
        payload: dict[str, Any] = {
            "model": self._model,
            "input": batch,
            "encoding_format": "float",
        }
        if self._send_dimensions:
            payload["dimensions"] = self._dimension
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        async with self._semaphore:
            try:
                response = await self._client.post(
                    self._url, json=payload, headers=headers, timeout=self._timeout
                )
            except httpx.TimeoutException as exc:
                raise _RetryableFailure(f"timeout ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise _RetryableFailure(f"connection error ({type(exc).__name__}: {exc})") from exc
        status = response.status_code
        if status in _RETRYABLE_STATUS:
            raise _RetryableFailure(
                f"HTTP {status}: {self._redact(_server_reason(response))}",
                retry_after=_parse_retry_after(response.headers.get("Retry-After")),
            )
        if not response.is_success:
            error = EmbeddingCredentialsError if status in (401, 403) else EmbeddingError
            raise error(
                f"embedding service {self._url} rejected the request with HTTP {status}: "
                f"{self._redact(_server_reason(response))}"
            )
        return self._parse(response, expected=len(batch))

    def _parse(self, response: httpx.Response, *, expected: int) -> list[list[float]]:
        try:
            items = response.json()["data"]
            ordered = sorted(items, key=lambda item: int(item["index"]))
            vectors = [[float(x) for x in item["embedding"]] for item in ordered]
            indices = [int(item["index"]) for item in ordered]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(
                f"embedding service {self._url} sent a malformed response: {exc!r}"
            ) from exc
        if indices != list(range(expected)):
            raise EmbeddingError(
                f"embedding service {self._url} returned indices {indices[:10]} "
                f"for {expected} input(s)"
            )
        lengths = {len(vector) for vector in vectors}
        if len(lengths) != 1:
            raise EmbeddingError(f"embedding service {self._url} returned mixed lengths {lengths}")
        (length,) = lengths
        if self._dimension is None:
            logger.info("embedding model %s has dimension %d", self.model_name, length)
            self._dimension = length
        elif length != self._dimension:
            raise ConfigurationError(
                f"{self.model_name} returned {length}-dimensional vectors but the configured "
                f"dimension is {self._dimension}"
            )
        return vectors
