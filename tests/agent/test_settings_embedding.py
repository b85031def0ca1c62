"""The agent's Settings read the EMBEDDING_* variables into ``Settings.embedding``.

The same variables, through the knowledge store's ``embedding_env``, as the ingestion job,
so both build the same embedder (``embedder_from_settings``).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ragkeeper_agent import Settings
from ragkeeper_agent.services import embedder_from_settings
from ragkeeper_knowledge.embedding import EMBEDDING_VARIABLES, EmbeddingConfig, HashingEmbedder

from .conftest import SECRET


@pytest.fixture(autouse=True)
def agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in EMBEDDING_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)


def test_embedding_variables_fill_the_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_PROVIDER", " TEI ")
    monkeypatch.setenv("EMBEDDING_BASE_URL", "http://tei:80/v1")
    monkeypatch.setenv("EMBEDDING_MODEL_CHOICE", "BAAI/bge-m3")
    monkeypatch.setenv("EMBEDDING_BATCH_SIZE", "16")
    monkeypatch.setenv("EMBEDDING_API_KEY", "")  # empty counts as unset
    settings = Settings()  # type: ignore[call-arg]
    assert settings.embedding == EmbeddingConfig(
        provider="tei", base_url="http://tei:80/v1", model="BAAI/bge-m3", batch_size=16
    )


def test_no_embedding_variables_mean_the_offline_default() -> None:
    assert Settings().embedding == EmbeddingConfig()  # type: ignore[call-arg]


def test_keyword_arguments_win_over_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_PROVIDER", "openai")
    settings = Settings(embedding=EmbeddingConfig(provider="hashing"))  # type: ignore[call-arg]
    assert settings.embedding.provider == "hashing"


def test_invalid_embedding_variable_refuses_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_DIMENSION", "large")
    with pytest.raises(ValidationError) as info:
        Settings()  # type: ignore[call-arg]
    assert info.value.errors()[0]["loc"] == ("embedding", "dimension")


async def test_the_embedder_is_built_from_settings_embedding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    monkeypatch.setenv("EMBEDDING_DIMENSION", "48")
    embedder = embedder_from_settings(Settings())  # type: ignore[call-arg]
    assert isinstance(embedder, HashingEmbedder)
    assert (embedder.model_name, embedder.dimension) == ("hashing-v1", 48)
    await embedder.aclose()
