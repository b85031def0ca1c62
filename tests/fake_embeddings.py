"""A fake OpenAI-compatible embedding API, served over real HTTP on 127.0.0.1.

:class:`FakeEmbeddings` answers ``POST /v1/embeddings`` with the hashing embedder's vectors
(deterministic, so a store seeded through it and a query embedded by it agree), counts its
calls, may hang until released (an API that stops answering) and may add a latency drawn per
call (an API across the network). :class:`EmbeddingServer` serves it on a port that stays
the same across a stop and a start, so a client finds it again after an outage.

Shared by the agent's tests and ``bench/``.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ragkeeper_knowledge.embedding import HashingEmbedder
from ragkeeper_knowledge.embedding.openai_compat import OpenAICompatibleEmbedder
from tests.support import serve_asgi

MODEL = "fake-embed"


@dataclass
class FakeEmbeddings:
    """``POST /v1/embeddings`` answering the hashing embedder's vectors; may hang or lag."""

    dimension: int = 64
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    latency: tuple[float, float] | None = None
    """Seconds added to each call, drawn uniformly from this range (seeded)."""
    calls: int = 0
    hashing: HashingEmbedder = field(init=False)
    _random: random.Random = field(init=False, default_factory=lambda: random.Random(7))

    def __post_init__(self) -> None:
        self.hashing = HashingEmbedder(self.dimension)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> JSONResponse:
            self.calls += 1
            if self.hang:
                await self.release.wait()
            if self.latency is not None:
                await asyncio.sleep(self._random.uniform(*self.latency))
            texts = (await request.json())["input"]
            vectors = await self.hashing.embed(texts)
            data = [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
            ]
            return JSONResponse({"object": "list", "data": data, "model": MODEL})

        return app


class EmbeddingServer:
    """The fake served on a fixed port, so the agent's embedder finds it again after a stop."""

    def __init__(self, fake: FakeEmbeddings | None = None) -> None:
        self.fake = fake or FakeEmbeddings()
        self.port = 0
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        started = asyncio.Event()
        stop = asyncio.Event()

        async def run() -> None:
            async with serve_asgi(self.fake.app(), port=self.port) as url:
                self.port = int(url.rsplit(":", 1)[1])
                started.set()
                await stop.wait()

        self._stop = stop
        self._task = asyncio.create_task(run())
        await started.wait()

    async def stop(self) -> None:
        assert self._stop is not None and self._task is not None
        self.fake.release.set()  # a hanging request ends, so the server can close
        self._stop.set()
        await self._task
        self.fake.release = asyncio.Event()

    def embedder(self) -> OpenAICompatibleEmbedder:
        """The agent's client: one quick retry and a short timeout, so an outage fails fast."""
        return OpenAICompatibleEmbedder(
            base_url=self.base_url,
            model=MODEL,
            provider="fake",
            dimension=self.fake.dimension,
            timeout_seconds=0.5,
            max_retries=1,
            backoff_initial_seconds=0.05,
            backoff_max_seconds=0.1,
            backoff_jitter_seconds=0.0,
        )
