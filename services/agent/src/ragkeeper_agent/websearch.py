"""Web search through SearXNG or Brave, when one is configured.

Both return a short list of ``WebResult`` so the agent's tool does not care which
one answered. The HTTP client is injected (opened once in the app's lifespan), so
tests point it at a local fake server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

logger = logging.getLogger(__name__)


class WebSearchError(Exception):
    """The search backend failed or answered with something unusable."""


@dataclass(frozen=True, slots=True)
class WebResult:
    title: str
    url: str
    snippet: str


class WebSearch:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        searxng_url: str = "",
        brave_api_key: str = "",
        brave_api_url: str = "",
        timeout: float = 10.0,
    ) -> None:
        self._client = client
        self._searxng = searxng_url.rstrip("/")
        self._brave_key = brave_api_key
        self._brave_url = brave_api_url
        self._timeout = timeout

    @property
    def backend(self) -> str:
        return "searxng" if self._searxng else "brave"

    async def search(self, query: str, count: int = 5) -> list[WebResult]:
        try:
            if self._searxng:
                return await self._searxng_search(query, count)
            return await self._brave_search(query, count)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise WebSearchError(f"{self.backend} search failed: {type(exc).__name__}") from exc

    async def _searxng_search(self, query: str, count: int) -> list[WebResult]:
        r = await self._client.get(
            f"{self._searxng}/search",
            params={"q": query, "format": "json"},
            timeout=self._timeout,
        )
        r.raise_for_status()
        items: list[dict[str, Any]] = r.json().get("results", [])
        return [
            WebResult(str(i.get("title", "")), str(i["url"]), str(i.get("content", "")))
            for i in items[:count]
        ]

    async def _brave_search(self, query: str, count: int) -> list[WebResult]:
        r = await self._client.get(
            self._brave_url,
            params={"q": query, "count": count},
            headers={"X-Subscription-Token": self._brave_key, "Accept": "application/json"},
            timeout=self._timeout,
        )
        r.raise_for_status()
        items: list[dict[str, Any]] = r.json().get("web", {}).get("results", [])
        return [
            WebResult(str(i.get("title", "")), str(i["url"]), str(i.get("description", "")))
            for i in items[:count]
        ]
