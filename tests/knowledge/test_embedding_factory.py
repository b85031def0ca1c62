"""embedding_env, EmbeddingConfig and create_embedder: defaults, wiring and clear errors."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from ragkeeper_knowledge.embedding import (
    EMBEDDING_VARIABLES,
    Embedder,
    EmbeddingConfig,
    HashingEmbedder,
    OfflineEmbedder,
    OpenAICompatibleEmbedder,
    create_embedder,
    embedding_env,
)
from ragkeeper_knowledge.errors import ConfigurationError


def recording_transport(seen: list[httpx.Request], dimension: int = 4) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        texts = json.loads(request.content)["input"]
        data = [
            {"index": i, "embedding": [1.0] + [0.0] * (dimension - 1)} for i in range(len(texts))
        ]
        return httpx.Response(200, json={"data": data})

    return httpx.MockTransport(handler)


def from_env(environ: dict[str, str]) -> EmbeddingConfig:
    """What a service's settings object does with its environment."""
    return EmbeddingConfig.model_validate(embedding_env(environ))


def test_no_variables_means_the_offline_model() -> None:
    assert embedding_env({}) == {}
    config = from_env({})
    assert config.provider == "offline"

    embedder = create_embedder(config)

    assert isinstance(embedder, OfflineEmbedder)
    assert isinstance(embedder, Embedder)
    assert embedder.model_name == "offline:all-MiniLM-L6-v2-onnx-int8"
    assert embedder.dimension == 384


def test_every_variable_is_read_and_empty_counts_as_unset() -> None:
    config = from_env(
        {
            "EMBEDDING_PROVIDER": " vLLM ",
            "EMBEDDING_BASE_URL": "http://vllm:8000/v1",
            "EMBEDDING_API_KEY": "",
            "EMBEDDING_MODEL_CHOICE": "BAAI/bge-m3",
            "EMBEDDING_DIMENSION": "1024",
            "EMBEDDING_BATCH_SIZE": "16",
            "EMBEDDING_MAX_CONCURRENCY": "2",
            "EMBEDDING_TIMEOUT_SECONDS": "12.5",
            "EMBEDDING_MAX_RETRIES": "3",
            "UNRELATED": "ignored",
        }
    )
    assert config == EmbeddingConfig(
        provider="vllm",
        base_url="http://vllm:8000/v1",
        model="BAAI/bge-m3",
        dimension=1024,
        batch_size=16,
        max_concurrency=2,
        timeout_seconds=12.5,
        max_retries=3,
    )
    assert config.api_key is None


def test_unknown_provider_is_refused_with_the_valid_ones_listed() -> None:
    with pytest.raises(ValidationError) as info:
        from_env({"EMBEDDING_PROVIDER": "cohere"})
    (error,) = info.value.errors()
    assert error["loc"] == ("provider",)
    assert "'offline'" in error["msg"] and "'vllm'" in error["msg"]


def test_non_numeric_dimension_is_refused_at_its_field() -> None:
    with pytest.raises(ValidationError) as info:
        from_env({"EMBEDDING_DIMENSION": "large"})
    (error,) = info.value.errors()
    assert EMBEDDING_VARIABLES[str(error["loc"][0])] == "EMBEDDING_DIMENSION"


def test_every_field_has_its_variable() -> None:
    assert set(EMBEDDING_VARIABLES) == set(EmbeddingConfig.model_fields)
    assert all(v.startswith("EMBEDDING_") for v in EMBEDDING_VARIABLES.values())


def test_openai_without_api_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="EMBEDDING_API_KEY"):
        create_embedder(EmbeddingConfig(provider="openai"))


@pytest.mark.parametrize(
    ("config", "variable"),
    [
        (EmbeddingConfig(provider="vllm", model="m"), "EMBEDDING_BASE_URL"),
        (EmbeddingConfig(provider="tei", base_url="http://tei/v1"), "EMBEDDING_MODEL_CHOICE"),
        (EmbeddingConfig(provider="ollama", base_url="ollama:11434"), "EMBEDDING_BASE_URL"),
        (EmbeddingConfig(provider="offline", dimension=768), "EMBEDDING_DIMENSION"),
    ],
    ids=["vllm-no-url", "tei-no-model", "url-no-scheme", "offline-wrong-dimension"],
)
def test_incomplete_settings_name_the_variable_to_fix(
    config: EmbeddingConfig, variable: str
) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        create_embedder(config)


def test_unknown_offline_model_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="all-MiniLM-L6-v2"):
        create_embedder(EmbeddingConfig(model="bge-large"))


def test_api_key_is_hidden_in_the_config_repr() -> None:
    config = EmbeddingConfig(provider="openai", api_key=SecretStr("sk-hidden-123"))
    assert "sk-hidden-123" not in repr(config)
    assert "sk-hidden-123" not in str(config.model_dump())


async def test_openai_provider_sends_key_model_and_dimensions() -> None:
    seen: list[httpx.Request] = []
    config = from_env(
        {
            "EMBEDDING_PROVIDER": "openai",
            "EMBEDDING_API_KEY": "sk-abc",
            "EMBEDDING_DIMENSION": "4",
        }
    )
    embedder = create_embedder(config, transport=recording_transport(seen))
    assert isinstance(embedder, OpenAICompatibleEmbedder)

    assert len(await embedder.embed_query("hello")) == 4
    await embedder.aclose()

    (request,) = seen
    assert str(request.url) == "https://api.openai.com/v1/embeddings"
    assert request.headers["Authorization"] == "Bearer sk-abc"
    body = json.loads(request.content)
    assert body["model"] == "text-embedding-3-small"
    assert body["dimensions"] == 4
    assert embedder.model_name == "openai:text-embedding-3-small"


async def test_ollama_provider_needs_no_key_and_uses_local_defaults() -> None:
    seen: list[httpx.Request] = []
    config = from_env({"EMBEDDING_PROVIDER": "ollama"})
    embedder = create_embedder(config, transport=recording_transport(seen, dimension=8))

    await embedder.embed(["a", "b"])
    await embedder.aclose()

    (request,) = seen
    assert str(request.url) == "http://localhost:11434/v1/embeddings"
    assert "Authorization" not in request.headers
    assert "dimensions" not in json.loads(request.content)
    assert embedder.model_name == "ollama:nomic-embed-text"
    assert embedder.dimension == 8


async def test_batch_size_reaches_the_http_embedder() -> None:
    seen: list[httpx.Request] = []
    config = EmbeddingConfig(provider="tei", base_url="http://tei:80/v1", model="bge", batch_size=2)
    embedder = create_embedder(config, transport=recording_transport(seen))

    await embedder.embed(["a", "b", "c", "d", "e"])
    await embedder.aclose()

    assert [len(json.loads(r.content)["input"]) for r in seen] == [2, 2, 1]


def test_hashing_provider_builds_the_test_embedder() -> None:
    embedder = create_embedder(EmbeddingConfig(provider="hashing", dimension=32))
    assert isinstance(embedder, HashingEmbedder)
    assert (embedder.model_name, embedder.dimension) == ("hashing-v1", 32)


def test_offline_warns_about_ignored_http_settings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        create_embedder(EmbeddingConfig(base_url="http://x/v1", api_key=SecretStr("k")))
    assert "ignored by the offline embedder" in caplog.text
