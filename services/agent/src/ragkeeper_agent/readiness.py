"""Whether this replica should get traffic: the answer of ``/readyz``.

Ready means the database answers and its schema is at the head migration. While a check is
running, every other probe waits for that check and shares its answer (one query at a time per
replica, however many probes arrive), so a flood of ``/readyz`` cannot multiply database work;
the next probe after it checks again, so the answer is never older than the request.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg

from ragkeeper_knowledge.errors import KnowledgeError
from ragkeeper_knowledge.migrate import current_revision, head_revision

from .errors import RETRY_AFTER_SECONDS

logger = logging.getLogger(__name__)

# The database must answer within this (a probe's own timeout is usually a little longer).
CHECK_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class ReadinessAnswer:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Readiness:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._running: asyncio.Task[ReadinessAnswer] | None = None

    async def answer(self) -> ReadinessAnswer:
        """The running check's answer, or a new check's."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._check())
        # shield: a probe that disconnects does not cancel the check the others wait for
        return await asyncio.shield(self._running)

    async def _check(self) -> ReadinessAnswer:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                async with self._pool.acquire() as conn:
                    revision = await current_revision(cast(asyncpg.Connection, conn))
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
        ) as exc:
            # Any failure to read the revision takes the replica out; the next probe puts it back.
            logger.warning("not ready: database unreachable (%s)", type(exc).__name__)
            return ReadinessAnswer(
                503, {"status": "database unreachable"}, {"Retry-After": str(RETRY_AFTER_SECONDS)}
            )
        try:
            head = head_revision()
        except KnowledgeError:
            return ReadinessAnswer(503, {"status": "migrations unreadable"})
        if revision != head:
            return ReadinessAnswer(
                503, {"status": "migrations pending", "revision": revision, "head": head}
            )
        return ReadinessAnswer(200, {"status": "ready", "revision": revision})
