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
  ``max_retry_after_seconds`` (``ragkeeper_knowledge.http_retry``, shared with
  the reranker);
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
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from ragkeeper_knowledge.errors import (
    ConfigurationError,
    EmbeddingCredentialsError,
    EmbeddingError,
    EmbeddingUnavailable,
)
from ragkeeper_knowledge.http_retry import (
    RetriesExhausted,
    RetryPolicy,
    gather_or_cancel,
    post_json,
    redact,
    server_reason,
)

__all__ = ["OpenAICompatibleEmbedder"]

logger = logging.getLogger(__name__)


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
        self._retry = RetryPolicy(
            max_retries=max_retries,
            backoff_initial_seconds=backoff_initial_seconds,
            backoff_max_seconds=backoff_max_seconds,
            backoff_jitter_seconds=backoff_jitter_seconds,
            max_retry_after_seconds=max_retry_after_seconds,
            sleep=sleep,
            label="embedding",
        )
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
        results = await gather_or_cancel([self._embed_batch(batch) for batch in batches])
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
        try:
            return await self._retry.call(lambda: self._post(batch), url=self._url)
        except RetriesExhausted as exc:
            raise EmbeddingUnavailable(f"embedding service {self._url} {exc}") from exc

    async def _post(self, batch: list[str]) -> list[list[float]]:
        payload: dict[str, Any] = {
            "model": self._model,
            "input": batch,
            "encoding_format": "float",
        }
        if self._send_dimensions:
            payload["dimensions"] = self._dimension
        async with self._semaphore:
            response = await post_json(
                self._client, self._url, payload, api_key=self._api_key, timeout=self._timeout
            )
        if not response.is_success:
            status = response.status_code
            error = EmbeddingCredentialsError if status in (401, 403) else EmbeddingError
            raise error(
                f"embedding service {self._url} rejected the request with HTTP {status}: "
                f"{redact(server_reason(response), self._api_key)}"
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
