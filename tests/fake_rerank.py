"""A fake reranking service, served over real HTTP by ``tests.support.serve_asgi``.

:class:`FakeRerankService` answers ``POST .../rerank`` in one of the two shapes the knowledge
store's rerankers speak: Hugging Face TEI (``{"query", "texts", "truncate"}`` ->
``[{"index", "score"}]``, sorted by score as TEI sorts them) or the Cohere-style API
(``{"model", "query", "documents", "top_n"}`` -> ``{"results": [{"index",
"relevance_score"}]}``, sorted and cut to ``top_n``). A text's score comes from the test's
``score`` function. Scripted answers (a status, a body, headers, a delay) are served first,
one per request, and every request is recorded with its path, headers and JSON body.

Shared by tests/knowledge (the clients) and tests/agent (retrieval and ``/api/search``), with
no component imports.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Shape = Literal["tei", "cohere"]


@dataclass
class Scripted:
    """One scripted answer: ``body`` is JSON unless it is ``bytes`` (sent as they are)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (longer than the client's timeout: a timeout)."""


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def words_in_common(query: str, text: str) -> float:
    """The default score: how many of the query's words the text contains."""
    words = set(text.lower().split())
    return float(sum(1 for word in set(query.lower().split()) if word in words))


@dataclass
class FakeRerankService:
    shape: Shape
    score: Callable[[str, str], float] = words_in_common
    script: list[Scripted] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)

    def texts(self, n: int = -1) -> list[str]:
        """The texts of request ``n`` (the last by default)."""
        body = self.requests[n].body
        return list(body["texts" if self.shape == "tei" else "documents"])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = json.loads(raw) if raw else {}
        self.requests.append(Seen(scope["path"], headers, body))
        answer = self.script.pop(0) if self.script else Scripted(body=self._answer(body))
        if answer.delay:
            await asyncio.sleep(answer.delay)
        payload = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body)
        content = payload if isinstance(payload, bytes) else payload.encode()
        extra = [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(b"content-type", b"application/json"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": content})

    def _answer(self, body: dict[str, Any]) -> Any:
        query = body["query"]
        if self.shape == "tei":
            ranks = [
                {"index": i, "score": self.score(query, text)}
                for i, text in enumerate(body["texts"])
            ]
            return sorted(ranks, key=lambda r: -r["score"])
        results = [
            {"index": i, "relevance_score": self.score(query, text), "document": {"text": text}}
            for i, text in enumerate(body["documents"])
        ]
        results.sort(key=lambda r: -r["relevance_score"])
        return {"id": "rerank-1", "results": results[: body.get("top_n") or len(results)]}
