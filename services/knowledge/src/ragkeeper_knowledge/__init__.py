"""ragkeeper knowledge store: schema + migrations, asyncpg pool, embedders, KnowledgeStore."""

from .db import create_pool
from .models import (
    ChunkWrite,
    DocumentInfo,
    DocumentText,
    DocumentWrite,
    PipelineState,
    RowWrite,
    SearchHit,
    StoredVersion,
    document_id,
)
from .store import KnowledgeStore

__all__ = [
    "ChunkWrite",
    "DocumentInfo",
    "DocumentText",
    "DocumentWrite",
    "KnowledgeStore",
    "PipelineState",
    "RowWrite",
    "SearchHit",
    "StoredVersion",
    "create_pool",
    "document_id",
]
