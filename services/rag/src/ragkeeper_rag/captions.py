"""Captions of images from a vision model, asked once per image content (docs/ocr.md, "Captions").

With ``RAG_IMAGE_CAPTIONS`` on, each PNG, JPEG and WebP file that extraction read is sent to an
OpenAI-compatible ``/chat/completions`` API as a base64 ``data:`` URI ``image_url`` part with a
short instruction; the answer is indexed as extra chunks of the image's document, so a search
finds a photo by what it shows as well as by the text OCR read in it.

* **Asked once per content.** Captions are kept in ``image_captions`` by the SHA-256 of the
  image's bytes and the model (``KnowledgeStore.existing_captions``), as chunk vectors are kept
  by the hash of their text: an unchanged image, or another file with the same bytes in any
  pipeline, is never sent again. Within a run, files with the same bytes share one request.
* **In the job's event loop**, not in the extraction workers: a caption is network I/O. At most
  ``concurrency`` requests are in flight; each is retried on what may heal (429, 5xx, timeouts,
  connection errors: ``ragkeeper_knowledge.http_retry``, as the embedding client does).
* **Never fatal.** Whatever fails (the API down, a 4xx, a timeout, an answer without text) is
  :class:`CaptionFailed`: the engine indexes the image with its OCR text, reports the file in
  the run's ``errors`` and stores a version that makes the next run try again.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from ragkeeper_knowledge import KnowledgeStore
from ragkeeper_knowledge.http_retry import (
    RetriesExhausted,
    RetryPolicy,
    post_json,
    redact,
    server_reason,
)

from .errors import RagError

logger = logging.getLogger(__name__)

CAPTION_PROMPT = (
    "Describe this image for a search index in at most five sentences: what it shows, and any "
    "text, names, numbers or labels in it. Answer with the description only."
)
MAX_CAPTION_CHARS = 4000
"""A longer answer is cut here (a caption is a few sentences; a runaway answer is not)."""
MAX_TOKENS = 300
MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""A larger image is not sent (as base64 it would be over most APIs' request limits)."""
CONCURRENCY = 4
MAX_RETRIES = 2

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)


class CaptionFailed(RagError):
    """No caption for one image; it is indexed without one and tried again at the next run."""


class CaptionRefused(CaptionFailed):
    """The image cannot be captioned as it is (too large, not an image): not asked again
    until it changes."""


def image_mime(data: bytes) -> str:
    """The MIME type of a PNG, JPEG or WebP image, by its content (its name may lie)."""
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise CaptionRefused("caption not asked for: not a PNG, JPEG or WebP image")


def _answer_text(body: Any) -> str:
    """The text of the first choice's message (a string, or a list of text parts)."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    if isinstance(content, list):
        content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return " ".join(str(content or "").split())[:MAX_CAPTION_CHARS].strip()


class Captioner:
    """An OpenAI-compatible chat completions client that describes one image per request."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_seconds: float = 60.0,
        concurrency: int = CONCURRENCY,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        max_retries: int = MAX_RETRIES,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 10.0,
        backoff_jitter_seconds: float = 1.0,
        max_retry_after_seconds: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.model = model
        self.max_image_bytes = max_image_bytes
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key or None
        self._timeout = httpx.Timeout(timeout_seconds)
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._retry = RetryPolicy(
            max_retries=max_retries,
            backoff_initial_seconds=backoff_initial_seconds,
            backoff_max_seconds=backoff_max_seconds,
            backoff_jitter_seconds=backoff_jitter_seconds,
            max_retry_after_seconds=max_retry_after_seconds,
            sleep=sleep,
            label="caption",
        )
        self._client = httpx.AsyncClient(
            timeout=self._timeout, headers={"User-Agent": "ragkeeper-rag"}
        )

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"Captioner(url={self._url!r}, model={self.model!r}, api_key={key})"

    async def caption(self, data: bytes) -> str:
        """What the model says the image shows; :class:`CaptionFailed` when it says nothing,
        :class:`CaptionRefused` for an image it is never sent."""
        if len(data) > self.max_image_bytes:
            raise CaptionRefused(
                f"caption not asked for: image of {len(data)} bytes "
                f"(over the {self.max_image_bytes} a caption request carries)"
            )
        uri = f"data:{image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"
        payload = {
            "model": self.model,
            "max_tokens": MAX_TOKENS,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": CAPTION_PROMPT},
                        {"type": "image_url", "image_url": {"url": uri}},
                    ],
                }
            ],
        }

        async def attempt() -> httpx.Response:
            return await post_json(
                self._client, self._url, payload, api_key=self._api_key, timeout=self._timeout
            )

        async with self._slots:
            try:
                response = await self._retry.call(attempt, url=self._url)
            except RetriesExhausted as exc:
                raise CaptionFailed(f"caption not written: {self._url} {exc}") from exc
        if not response.is_success:
            reason = redact(server_reason(response), self._api_key)
            raise CaptionFailed(
                f"caption not written: {self._url} answered HTTP {response.status_code}: {reason}"
            )
        try:
            text = _answer_text(response.json())
        except ValueError:
            text = ""
        if not text:
            raise CaptionFailed(f"caption not written: {self._url} answered no text")
        return text

    async def aclose(self) -> None:
        await self._client.aclose()


class Captions:
    """One run's captions: the store's first, the model for the rest, each content asked once."""

    def __init__(self, store: KnowledgeStore, captioner: Captioner) -> None:
        self._store = store
        self._captioner = captioner
        self._runs: dict[str, asyncio.Task[str]] = {}

    async def __call__(self, content_hash: str, data: bytes) -> str:
        """The caption of the image whose bytes hash to ``content_hash``."""
        task = self._runs.get(content_hash)
        if task is None:
            task = asyncio.ensure_future(self._caption(content_hash, data))
            self._runs[content_hash] = task
            # Forgotten once done: a later file with these bytes finds the caption in the store
            # (or, after a failure, tries again), and no finished request keeps an image alive.
            task.add_done_callback(lambda _: self._runs.pop(content_hash, None))
        return await asyncio.shield(task)

    async def _caption(self, content_hash: str, data: bytes) -> str:
        model = self._captioner.model
        cached = await self._store.existing_captions([content_hash], model)
        if content_hash in cached:
            return cached[content_hash]
        caption = await self._captioner.caption(data)
        await self._store.save_caption(content_hash, model, caption)
        return caption

    async def aclose(self) -> None:
        """Cancel what a stopped run still waits for."""
        tasks = list(self._runs.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
