"""Long-term memory per user: short facts kept across conversations (docs/agent.md, "Memory").

A memory is a sentence ("my team is Falcon", "answer in French") with its embedding, owned
by one user id. Every statement here names the user, so one user's memories are never read,
changed or deleted for another, and a memory id of someone else is indistinguishable from one
that does not exist. The table (migration 0006) has no vector index: a user has few memories,
and the search scans only theirs with an exact cosine distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

MAX_MEMORY_CHARS = 500
"""A memory is one fact or preference; longer text is refused (the model may shorten it)."""
RECALL_K = 3
"""Memories given to the model at the start of a turn, at most."""
RECALL_MIN_SIMILARITY = 0.3
"""Cosine similarity a memory needs with the question to be given to the model."""
MAX_MEMORIES_PER_USER = 500
"""Memories one user may keep; a new one past that is refused until they forget some."""


class MemoryFull(Exception):
    """The user keeps as many memories as allowed; a new one is refused (nothing is dropped)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the memory is full ({limit} kept)")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Memory:
    id: int
    content: str
    session_id: str | None
    created_at: datetime
    updated_at: datetime
    score: float | None = None
    """Cosine similarity with the query, for a search's results."""


class MemoryStore:
    def __init__(self, pool: asyncpg.Pool, max_per_user: int = MAX_MEMORIES_PER_USER) -> None:
        self._pool = pool
        self._max_per_user = max_per_user

    async def save(
        self, user_id: str, content: str, embedding: list[float], *, session_id: str | None
    ) -> Memory:
        """Keep ``content`` for ``user_id``; saying the same thing again refreshes it.

        A new memory past ``max_per_user`` raises ``MemoryFull`` (two saves racing at the
        limit may both land: the cap is kept within one).
        """
        row = await self._pool.fetchrow(
            "INSERT INTO memories (user_id, content, embedding, session_id) "
            "SELECT $1, $2, $3::vector, $4 "
            "WHERE (SELECT count(*) FROM memories WHERE user_id = $1) < $5 "
            "OR EXISTS (SELECT 1 FROM memories WHERE user_id = $1 AND content = $2) "
            "ON CONFLICT (user_id, content) DO UPDATE "
            "SET updated_at = now(), embedding = EXCLUDED.embedding, "
            "session_id = coalesce(EXCLUDED.session_id, memories.session_id) "
            "RETURNING id, content, session_id, created_at, updated_at",
            user_id,
            content,
            embedding,
            session_id,
            self._max_per_user,
        )
        if row is None:  # the SELECT gave no row: a new memory past the limit
            raise MemoryFull(self._max_per_user)
        return Memory(**dict(row))

    async def search(
        self, user_id: str, embedding: list[float], *, k: int, min_similarity: float
    ) -> list[Memory]:
        """The user's ``k`` memories closest to ``embedding`` with at least ``min_similarity``.

        Memories embedded with another dimension (a changed embedding model) are skipped.
        """
        rows = await self._pool.fetch(
            "SELECT id, content, session_id, created_at, updated_at, score FROM ("
            "  SELECT id, content, session_id, created_at, updated_at, "
            "  1 - (embedding <=> $2::vector) AS score FROM memories "
            "  WHERE user_id = $1 AND vector_dims(embedding) = vector_dims($2::vector)"
            ") m WHERE score >= $3 ORDER BY score DESC, id DESC LIMIT $4",
            user_id,
            embedding,
            min_similarity,
            k,
        )
        return [Memory(**{**dict(r), "score": round(float(r["score"]), 6)}) for r in rows]

    async def list_for_user(
        self, user_id: str, *, limit: int = 50, offset: int = 0
    ) -> list[Memory]:
        rows = await self._pool.fetch(
            "SELECT id, content, session_id, created_at, updated_at FROM memories "
            "WHERE user_id = $1 ORDER BY updated_at DESC, id DESC LIMIT $2 OFFSET $3",
            user_id,
            limit,
            offset,
        )
        return [Memory(**dict(r)) for r in rows]

    async def delete(self, user_id: str, memory_id: int) -> bool:
        """Forget one of the user's memories; False if the user has none with this id."""
        status = await self._pool.execute(
            "DELETE FROM memories WHERE id = $1 AND user_id = $2", memory_id, user_id
        )
        return bool(status != "DELETE 0")
