"""The agent's start-up check of the store's embedding model (docs/architecture.md, invariant 5).

An API embedder configured without ``EMBEDDING_DIMENSION`` (the chart's production values)
learns its dimension from one call: the check must probe it rather than fail, and must not call
the API at all while the store holds no vectors yet.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from ragkeeper_agent.services import open_services
from ragkeeper_knowledge import KnowledgeStore, create_pool
from ragkeeper_knowledge.embedding.openai_compat import OpenAICompatibleEmbedder
from ragkeeper_knowledge.errors import EmbeddingModelMismatch

from ..conftest import create_database
from .conftest import settings_for

DIMENSION = 12


class EmbeddingsAPI:
    """An OpenAI-compatible /embeddings answering vectors of ``DIMENSION``; counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        texts = json.loads(request.content)["input"]
        data = [{"index": i, "embedding": [0.1] * DIMENSION} for i, _ in enumerate(texts)]
        return httpx.Response(200, json={"object": "list", "data": data, "model": "m"})


def api_embedder(
    api: EmbeddingsAPI, model: str = "text-embedding-3-small"
) -> OpenAICompatibleEmbedder:
    return OpenAICompatibleEmbedder(
        base_url="https://embeddings.invalid/v1",
        model=model,
        api_key="k" * 20,
        transport=httpx.MockTransport(api),
    )


async def recorded_store(pg_admin_url: str, model: str, dimension: int) -> str:
    url = await create_database(pg_admin_url, "agent_model_check")
    pool = await create_pool(url)  # migrates first
    try:
        await KnowledgeStore(pool).register_embedding_model(model, dimension)
    finally:
        await pool.close()
    return url


async def test_empty_store_starts_without_calling_the_embedding_api(pg_admin_url: str) -> None:
    api = EmbeddingsAPI()
    url = await create_database(pg_admin_url, "agent_model_check")
    services = await open_services(
        settings_for(url), draining=asyncio.Event(), embedder=api_embedder(api)
    )
    await services.aclose()
    assert api.calls == 0


async def test_recorded_model_is_compared_after_probing_the_dimension(pg_admin_url: str) -> None:
    api = EmbeddingsAPI()
    url = await recorded_store(pg_admin_url, api_embedder(api).model_name, DIMENSION)
    services = await open_services(
        settings_for(url), draining=asyncio.Event(), embedder=api_embedder(api)
    )
    await services.aclose()
    assert api.calls == 1  # one probe, then the same model and dimension: it starts


async def test_another_recorded_model_still_refuses_to_start(pg_admin_url: str) -> None:
    model_name = api_embedder(EmbeddingsAPI()).model_name
    url = await recorded_store(pg_admin_url, model_name, DIMENSION + 1)
    with pytest.raises(EmbeddingModelMismatch, match="dimension"):
        await open_services(
            settings_for(url), draining=asyncio.Event(), embedder=api_embedder(EmbeddingsAPI())
        )
