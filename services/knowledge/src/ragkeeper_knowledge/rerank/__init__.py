"""Second-stage reranking of search hits through a reranking service (off by default).

Build one from settings with :func:`create_reranker` (``create_reranker(settings.rerank)``:
the agent's settings nest a :class:`RerankConfig` filled from :func:`rerank_env`, the
``RERANK_*`` variables); it returns ``None`` while ``RERANK_PROVIDER`` is ``none``. The agent
depends only on :class:`Reranker`.
"""

from ragkeeper_knowledge.rerank.clients import CohereReranker, HTTPReranker, Reranker, TEIReranker
from ragkeeper_knowledge.rerank.config import (
    RERANK_VARIABLES,
    RerankConfig,
    RerankProvider,
    create_reranker,
    rerank_env,
)

__all__ = [
    "RERANK_VARIABLES",
    "CohereReranker",
    "HTTPReranker",
    "RerankConfig",
    "RerankProvider",
    "Reranker",
    "TEIReranker",
    "create_reranker",
    "rerank_env",
]
