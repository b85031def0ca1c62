"""One place that turns settings into a reranker (or none: reranking is off by default).

:class:`RerankConfig` is the shape of the ``RERANK_*`` variables (:data:`RERANK_VARIABLES`);
the agent's settings object nests it as ``rerank`` and fills it from :func:`rerank_env`, the
way it fills ``embedding`` from ``embedding_env``. A combination that cannot work (a provider
without ``RERANK_BASE_URL``, ``cohere`` without ``RERANK_MODEL``) fails validation with a
message naming the variable to set, so the agent refuses to start (exit 2) instead of
answering every search in the fused order with a warning. :func:`create_reranker` is the
only code that knows which class serves which provider.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, Self

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ragkeeper_knowledge.rerank.clients import (
    CohereReranker,
    HTTPReranker,
    Reranker,
    TEIReranker,
)
from ragkeeper_knowledge.settings_env import variables_env

__all__ = ["RERANK_VARIABLES", "RerankConfig", "RerankProvider", "create_reranker", "rerank_env"]

logger = logging.getLogger(__name__)

RerankProvider = Literal["none", "tei", "cohere"]

RERANK_VARIABLES: Mapping[str, str] = MappingProxyType(
    {
        "provider": "RERANK_PROVIDER",
        "base_url": "RERANK_BASE_URL",
        "api_key": "RERANK_API_KEY",
        "model": "RERANK_MODEL",
        "timeout_seconds": "RERANK_TIMEOUT_SECONDS",
        "max_retries": "RERANK_MAX_RETRIES",
        "candidates": "RERANK_CANDIDATES",
    }
)
"""The environment variable of each :class:`RerankConfig` field."""


def rerank_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``RERANK_*`` variables that are set (empty ones left out), keyed by field."""
    return variables_env(RERANK_VARIABLES, environ)


class RerankConfig(BaseModel):
    """Which reranking service to call, if any (``RERANK_*``).

    ``candidates`` is how many hybrid search hits are reranked (at least the number of
    passages asked for); the best of them by the service's score are returned.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: RerankProvider = "none"
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    max_retries: int = Field(default=2, ge=0, le=10)
    candidates: int = Field(default=20, ge=2, le=100)

    @field_validator("provider", mode="before")
    @classmethod
    def _provider_name(cls, value: object) -> object:
        """``" TEI "`` means ``tei``: provider names are compared without case or blanks."""
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _usable(self) -> Self:
        if self.provider == "none":
            return self
        if not self.base_url:
            raise ValueError(
                f"RERANK_PROVIDER={self.provider} needs RERANK_BASE_URL (the service's root; "
                "/rerank is appended)"
            )
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("RERANK_BASE_URL must start with http:// or https://")
        if self.provider == "cohere" and not self.model:
            raise ValueError(
                "RERANK_PROVIDER=cohere needs RERANK_MODEL (the reranking model the server "
                "serves, e.g. rerank-v3.5 or BAAI/bge-reranker-v2-m3)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.provider != "none"


def create_reranker(
    config: RerankConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> Reranker | None:
    """The reranker ``config`` describes, or ``None`` when reranking is off.

    Args:
        config: the ``RERANK_*`` settings (already validated: a provider has its URL).
        transport: httpx transport of the reranker's client (tests).
    """
    if not config.enabled:
        if config.base_url or config.api_key or config.model:
            logger.warning(
                "RERANK_BASE_URL/RERANK_API_KEY/RERANK_MODEL are ignored while "
                "RERANK_PROVIDER is none; set RERANK_PROVIDER to tei or cohere to rerank"
            )
        return None
    # RerankConfig refuses a provider without a URL (B101 does not apply).
    assert config.base_url is not None  # nosec B101
    kind: type[HTTPReranker] = TEIReranker if config.provider == "tei" else CohereReranker
    return kind(
        base_url=config.base_url,
        model=config.model,
        api_key=config.api_key.get_secret_value() if config.api_key else None,
        timeout_seconds=config.timeout_seconds,
        max_retries=config.max_retries,
        transport=transport,
    )
