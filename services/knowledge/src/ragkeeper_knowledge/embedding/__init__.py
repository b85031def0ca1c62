"""Embedders: the offline default, any OpenAI-compatible API, and a test double.

Build one from settings with :func:`create_embedder`
(``create_embedder(EmbeddingConfig.from_env())``); everything else in the
knowledge store and the services depends only on the :class:`Embedder` protocol.
"""

from ragkeeper_knowledge.embedding.base import DimensionProbing, Embedder, ensure_dimension
from ragkeeper_knowledge.embedding.factory import (
    EmbeddingConfig,
    EmbeddingProvider,
    create_embedder,
)
from ragkeeper_knowledge.embedding.hashing import HashingEmbedder
from ragkeeper_knowledge.embedding.offline import OFFLINE_MODELS, OfflineEmbedder
from ragkeeper_knowledge.embedding.openai_compat import OpenAICompatibleEmbedder

__all__ = [
    "OFFLINE_MODELS",
    "DimensionProbing",
    "Embedder",
    "EmbeddingConfig",
    "EmbeddingProvider",
    "HashingEmbedder",
    "OfflineEmbedder",
    "OpenAICompatibleEmbedder",
    "create_embedder",
    "ensure_dimension",
]
