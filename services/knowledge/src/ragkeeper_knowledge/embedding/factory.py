"""One place that turns settings into an embedder.

The agent, the ingestion job and the operator (which passes the same variables
on to jobs) all read ``EMBEDDING_PROVIDER``, ``EMBEDDING_BASE_URL``,
``EMBEDDING_API_KEY`` and ``EMBEDDING_MODEL_CHOICE``; they must agree, or the
store would mix vector spaces. :class:`EmbeddingConfig` is that shared shape
(each service's settings object embeds it), and :func:`create_embedder` is the
only code that knows which class serves which provider and what each one's
defaults are. A wrong combination fails here with a
:class:`~ragkeeper_knowledge.errors.ConfigurationError` (exit 2) that names the
variable to fix, not later with an HTTP 401 in the middle of a run.

Optional tuning variables: ``EMBEDDING_DIMENSION``, ``EMBEDDING_BATCH_SIZE``,
``EMBEDDING_MAX_CONCURRENCY``, ``EMBEDDING_TIMEOUT_SECONDS``,
``EMBEDDING_MAX_RETRIES``. Empty values count as unset (Helm often renders ``""``).

Each service's settings object has a nested ``embedding: EmbeddingConfig`` field
and fills it from :func:`embedding_env` (the variables, by field name) as a
settings source ranked with its other environment variables, so the same
precedence holds for the embedding keys as for the rest; the ingestion job's
config file gives the same keys as an ``[embedding]`` table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ragkeeper_knowledge.embedding.base import Embedder
from ragkeeper_knowledge.embedding.hashing import HashingEmbedder
from ragkeeper_knowledge.embedding.offline import (
    DEFAULT_OFFLINE_BATCH,
    DEFAULT_OFFLINE_MODEL,
    OfflineEmbedder,
)
from ragkeeper_knowledge.embedding.openai_compat import OpenAICompatibleEmbedder
from ragkeeper_knowledge.errors import ConfigurationError
from ragkeeper_knowledge.settings_env import variables_env

__all__ = [
    "EMBEDDING_VARIABLES",
    "EmbeddingConfig",
    "EmbeddingProvider",
    "create_embedder",
    "embedding_env",
]

logger = logging.getLogger(__name__)

EmbeddingProvider = Literal["offline", "openai", "ollama", "vllm", "tei", "hashing"]
HTTP_PROVIDERS: frozenset[str] = frozenset({"openai", "ollama", "vllm", "tei"})

_DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "ollama": "http://localhost:11434/v1",
}
_DEFAULT_MODELS = {
    "openai": "text-embedding-3-small",
    "ollama": "nomic-embed-text",
    "offline": DEFAULT_OFFLINE_MODEL,
}
_DEFAULT_HTTP_BATCH = 64
_HASHING_DIMENSION = 384

EMBEDDING_VARIABLES: Mapping[str, str] = MappingProxyType(
    {
        "provider": "EMBEDDING_PROVIDER",
        "base_url": "EMBEDDING_BASE_URL",
        "api_key": "EMBEDDING_API_KEY",
        "model": "EMBEDDING_MODEL_CHOICE",
        "dimension": "EMBEDDING_DIMENSION",
        "batch_size": "EMBEDDING_BATCH_SIZE",
        "max_concurrency": "EMBEDDING_MAX_CONCURRENCY",
        "timeout_seconds": "EMBEDDING_TIMEOUT_SECONDS",
        "max_retries": "EMBEDDING_MAX_RETRIES",
    }
)
"""The environment variable of each :class:`EmbeddingConfig` field."""


def embedding_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``EMBEDDING_*`` variables that are set, keyed by :class:`EmbeddingConfig` field.

    Values are stripped and empty ones left out (Helm often renders ``""``), so an
    unset variable never hides a value from a lower-priority source. A service's
    settings object hands ``{"embedding": embedding_env()}`` to pydantic-settings
    as a source next to its environment source; pydantic-settings merges it key by
    key with the config file's ``embedding`` table.
    """
    return variables_env(EMBEDDING_VARIABLES, environ)


class EmbeddingConfig(BaseModel):
    """Which embedder to build; every service reads the same ``EMBEDDING_*`` variables.

    Invalid values fail validation (a pydantic ``ValidationError`` located at
    ``embedding.<field>`` in a service's settings); :data:`EMBEDDING_VARIABLES`
    names the variable to fix.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: EmbeddingProvider = "offline"
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None
    dimension: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0, le=4096)
    max_concurrency: int = Field(default=4, gt=0, le=64)
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=20)

    @field_validator("provider", mode="before")
    @classmethod
    def _provider_name(cls, value: object) -> object:
        """``" vLLM "`` means ``vllm``: provider names are compared without case or blanks."""
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def resolved_model(self) -> str | None:
        """The model that will be used, after the provider's default."""
        return self.model or _DEFAULT_MODELS.get(self.provider)

    @property
    def resolved_base_url(self) -> str | None:
        """The API root that will be used, after the provider's default."""
        return self.base_url or _DEFAULT_BASE_URLS.get(self.provider)


def create_embedder(
    config: EmbeddingConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> Embedder:
    """Build the embedder ``config`` describes.

    Args:
        config: the shared embedding settings.
        transport: httpx transport for HTTP providers (tests serve a fake provider).

    Raises:
        ConfigurationError: the settings cannot work (missing key, URL or model,
            a dimension the offline model does not have...).
    """
    if config.provider == "hashing":
        return HashingEmbedder(config.dimension or _HASHING_DIMENSION)
    if config.provider == "offline":
        return _offline(config)
    return _http(config, transport)


def _offline(config: EmbeddingConfig) -> OfflineEmbedder:
    if config.base_url or config.api_key:
        logger.warning(
            "EMBEDDING_BASE_URL/EMBEDDING_API_KEY are ignored by the offline embedder; "
            "set EMBEDDING_PROVIDER to use an embedding API"
        )
    embedder = OfflineEmbedder(
        config.resolved_model or DEFAULT_OFFLINE_MODEL,
        batch_size=config.batch_size or DEFAULT_OFFLINE_BATCH,
    )
    if config.dimension is not None and config.dimension != embedder.dimension:
        raise ConfigurationError(
            f"EMBEDDING_DIMENSION={config.dimension} but the offline model "
            f"{embedder.model_name} produces {embedder.dimension}-dimensional vectors"
        )
    return embedder


def _http(
    config: EmbeddingConfig, transport: httpx.AsyncBaseTransport | None
) -> OpenAICompatibleEmbedder:
    provider = config.provider
    base_url = config.resolved_base_url
    if not base_url:
        raise ConfigurationError(
            f"EMBEDDING_PROVIDER={provider} needs EMBEDDING_BASE_URL "
            "(the server's OpenAI-compatible root, e.g. http://host:8000/v1)"
        )
    if not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"EMBEDDING_BASE_URL must start with http:// or https://, got {base_url!r}"
        )
    model = config.resolved_model
    if not model:
        raise ConfigurationError(
            f"EMBEDDING_PROVIDER={provider} needs EMBEDDING_MODEL_CHOICE "
            "(the model name the server serves; it is recorded with the vectors)"
        )
    api_key = config.api_key.get_secret_value() if config.api_key else None
    if provider == "openai" and not api_key:
        raise ConfigurationError("EMBEDDING_PROVIDER=openai needs EMBEDDING_API_KEY")
    return OpenAICompatibleEmbedder(
        base_url=base_url,
        model=model,
        api_key=api_key,
        provider=provider,
        dimension=config.dimension,
        # Only OpenAI's text-embedding-3 models shorten vectors on request;
        # other servers reject or ignore the field.
        send_dimensions=provider == "openai" and config.dimension is not None,
        batch_size=config.batch_size or _DEFAULT_HTTP_BATCH,
        max_concurrency=config.max_concurrency,
        timeout_seconds=config.timeout_seconds,
        max_retries=config.max_retries,
        transport=transport,
    )
