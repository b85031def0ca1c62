"""Rerankers: a second-stage relevance score per passage from a reranking service.

A cross-encoder reads the query and one passage together and scores how well the passage
answers it, which ranks better than the hybrid search's fused order but costs a model run per
passage. No CPU cross-encoder ships inside a PyPI wheel, so the model runs in a service the
operator deploys, reached over HTTP in one of two shapes (``POST {base_url}/rerank``):

* :class:`TEIReranker`, Hugging Face Text Embeddings Inference:
  ``{"query": q, "texts": [...], "truncate": true}`` ->
  ``[{"index": i, "score": s}, ...]`` (sorted by score). TEI refuses more texts per request
  than its ``--max-client-batch-size`` (32 by default), so texts go in batches of 32, sent
  concurrently.
* :class:`CohereReranker`, the Cohere-style API that Cohere, Jina, vLLM, Infinity and LocalAI
  implement (``base_url`` usually ends with ``/v1``):
  ``{"model": m, "query": q, "documents": [...], "top_n": n}`` ->
  ``{"results": [{"index": i, "relevance_score": s}, ...]}``; ``top_n`` is the number of
  documents sent, so every document gets its score.

Both send the API key, when there is one, only as ``Authorization: Bearer``, and retry like
the embedder (``ragkeeper_knowledge.http_retry``): 408/425/429/5xx, timeouts and connection
errors, with exponential backoff plus jitter or exactly the server's ``Retry-After``. The
client sits in a search request's path, so a ``Retry-After`` longer than one request's timeout
ends the retries at once. Errors: :class:`~ragkeeper_knowledge.errors.RerankUnavailable` once
retries are exhausted, :class:`~ragkeeper_knowledge.errors.RerankError` for any other refusal
(with the server's reason) and for an answer that is not exactly one finite number per text.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

import httpx

from ragkeeper_knowledge.errors import ConfigurationError, RerankError, RerankUnavailable
from ragkeeper_knowledge.http_retry import (
    RetriesExhausted,
    RetryPolicy,
    gather_or_cancel,
    post_json,
    redact,
    server_reason,
)

__all__ = ["CohereReranker", "HTTPReranker", "Reranker", "TEIReranker"]

TEI_MAX_CLIENT_BATCH = 32
"""TEI's default ``--max-client-batch-size``: more texts in one request are refused."""


class Reranker(ABC):
    """Scores texts against a query: one score per text, in input order, higher is better."""

    @property
    @abstractmethod
    def name(self) -> str:
        """``<provider>:<model>``, for logs."""

    @abstractmethod
    async def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        """One score per text of ``texts``, in their order.

        Raises:
            RerankUnavailable: the service kept failing after the retries.
            RerankError: the service refused the request or answered something else than
                one finite score per text.
        """

    async def aclose(self) -> None:  # noqa: B027 - a no-op unless the reranker holds a client
        """Release the connections this reranker opened."""


class HTTPReranker(Reranker):
    """``POST {base_url}/rerank`` with retries; subclasses give the request and response shape.

    Args:
        base_url: the service's root, ``/rerank`` is appended (TEI: ``http://tei:80``;
            Cohere-style servers: usually ``.../v1``).
        model: model name sent to Cohere-style servers (TEI serves one model and ignores it).
        api_key: sent as ``Authorization: Bearer``; ``None`` sends no header.
        timeout_seconds: per-request timeout (connect, read, write, pool).
        max_retries: retries after the first attempt for transient failures.
        batch_size: texts per request; ``None`` sends them all at once.
        backoff_initial_seconds / backoff_max_seconds / backoff_jitter_seconds:
            exponential backoff when the server sends no ``Retry-After``.
        max_retry_after_seconds: a longer ``Retry-After`` fails at once; ``None`` means
            ``timeout_seconds`` (a search should not wait longer than one request may take).
        client: an ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`).
        transport: transport for the client this reranker creates (tests).
        sleep: coroutine used to wait between attempts (tests record the waits).
    """

    provider: ClassVar[str]
    score_key: ClassVar[str]
    """The score's key in each result object."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout_seconds: float = 10.0,
        max_retries: int = 2,
        batch_size: int | None = None,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 4.0,
        backoff_jitter_seconds: float = 0.5,
        max_retry_after_seconds: float | None = None,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_retries < 0 or timeout_seconds <= 0 or (batch_size is not None and batch_size < 1):
            raise ConfigurationError("max_retries must be >= 0, timeout > 0, batch_size >= 1")
        self._url = base_url.rstrip("/") + "/rerank"
        self._model = model or None
        self._api_key = api_key or None
        self._batch_size = batch_size
        self._retry = RetryPolicy(
            max_retries=max_retries,
            backoff_initial_seconds=backoff_initial_seconds,
            backoff_max_seconds=backoff_max_seconds,
            backoff_jitter_seconds=backoff_jitter_seconds,
            max_retry_after_seconds=(
                timeout_seconds if max_retry_after_seconds is None else max_retry_after_seconds
            ),
            sleep=sleep,
            label="rerank",
        )
        self._timeout = httpx.Timeout(timeout_seconds)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            transport=transport,
            timeout=self._timeout,
            headers={"User-Agent": "ragkeeper-knowledge"},
        )

    @property
    def name(self) -> str:
        return f"{self.provider}:{self._model}" if self._model else self.provider

    async def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        size = self._batch_size or len(texts)
        batches = [list(texts[start : start + size]) for start in range(0, len(texts), size)]
        results = await gather_or_cancel([self._rerank_batch(query, batch) for batch in batches])
        return [score for batch_scores in results for score in batch_scores]

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"{type(self).__name__}(url={self._url!r}, model={self._model!r}, api_key={key})"

    @abstractmethod
    def _payload(self, query: str, texts: list[str]) -> dict[str, Any]:
        """The request body for one batch."""

    @abstractmethod
    def _results(self, body: Any) -> Any:
        """The list of ``{"index": i, <score_key>: s}`` objects in a response body."""

    async def _rerank_batch(self, query: str, texts: list[str]) -> list[float]:
        try:
            return await self._retry.call(lambda: self._post(query, texts), url=self._url)
        except RetriesExhausted as exc:
            raise RerankUnavailable(f"reranking service {self._url} {exc}") from exc

    async def _post(self, query: str, texts: list[str]) -> list[float]:
        response = await post_json(
            self._client,
            self._url,
            self._payload(query, texts),
            api_key=self._api_key,
            timeout=self._timeout,
        )
        if not response.is_success:
            raise RerankError(
                f"reranking service {self._url} rejected the request with HTTP "
                f"{response.status_code}: {redact(server_reason(response), self._api_key)}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise RerankError(f"reranking service {self._url} answered with no JSON") from exc
        return self._scores(self._results(body), expected=len(texts))

    def _scores(self, results: Any, *, expected: int) -> list[float]:
        """One finite score per text, by ``index``; anything else is a :class:`RerankError`."""
        where = f"reranking service {self._url}"
        if not isinstance(results, list):
            raise RerankError(f"{where} sent a malformed response: no list of results")
        if len(results) != expected:
            raise RerankError(f"{where} returned {len(results)} score(s) for {expected} text(s)")
        scores: list[float | None] = [None] * expected
        for item in results:
            index = item.get("index") if isinstance(item, dict) else None
            # bool is an int to Python, not an index to anyone else
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < expected:
                raise RerankError(f"{where} returned index {index!r} for {expected} text(s)")
            if scores[index] is not None:
                raise RerankError(f"{where} returned index {index} twice")
            score = item.get(self.score_key)
            if (
                not isinstance(score, int | float)
                or isinstance(score, bool)
                or not math.isfinite(score)
            ):
                raise RerankError(f"{where} returned {self.score_key} {score!r} for text {index}")
            scores[index] = float(score)
        return [float(score) for score in scores if score is not None]


class TEIReranker(HTTPReranker):
    """Hugging Face Text Embeddings Inference's ``/rerank`` (a cross-encoder model)."""

    provider = "tei"
    score_key = "score"

    def __init__(self, *, batch_size: int | None = TEI_MAX_CLIENT_BATCH, **options: Any) -> None:
        super().__init__(batch_size=batch_size, **options)

    def _payload(self, query: str, texts: list[str]) -> dict[str, Any]:
        # truncate: a passage longer than the model's window is cut, not refused with 413
        return {"query": query, "texts": texts, "truncate": True}

    def _results(self, body: Any) -> Any:
        return body


class CohereReranker(HTTPReranker):
    """The Cohere-style ``/rerank`` of Cohere, Jina, vLLM, Infinity and LocalAI."""

    provider = "cohere"
    score_key = "relevance_score"

    def _payload(self, query: str, texts: list[str]) -> dict[str, Any]:
        payload: dict[str, Any] = {"query": query, "documents": texts, "top_n": len(texts)}
        if self._model:
            payload["model"] = self._model
        return payload

    def _results(self, body: Any) -> Any:
        return body.get("results") if isinstance(body, dict) else None
