"""Embedders: the offline default, any OpenAI-compatible API, and a test double.

Build one from settings with :func:`create_embedder`
(``create_embedder(settings.embedding)``: each service's settings object nests an
:class:`EmbeddingConfig` filled from :func:`embedding_env`); everything else in the
knowledge store and the services depends only on the :class:`Embedder` protocol.
"""

from ragkeeper_knowledge.embedding.base import DimensionProbing, Embedder, ensure_dimension
from ragkeeper_knowledge.embedding.factory import (
    EMBEDDING_VARIABLES,
    EmbeddingConfig,
    EmbeddingProvider,
    create_embedder,
    embedding_env,
)
from ragkeeper_knowledge.embedding.hashing import HashingEmbedder
from ragkeeper_knowledge.embedding.offline import OFFLINE_MODELS, OfflineEmbedder
from ragkeeper_knowledge.embedding.openai_compat import OpenAICompatibleEmbedder

__all__ = [
    "EMBEDDING_VARIABLES",
    "OFFLINE_MODELS",
    "DimensionProbing",
    "Embedder",
    "EmbeddingConfig",
    "EmbeddingProvider",
    "HashingEmbedder",
    "OfflineEmbedder",
    "OpenAICompatibleEmbedder",
    "create_embedder",
    "embedding_env",
    "ensure_dimension",
]
