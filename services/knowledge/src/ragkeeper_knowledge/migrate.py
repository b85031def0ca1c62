"""Versioned schema migrations, applied under a Postgres advisory lock.

docs/architecture.md, invariant 7: migrations under an advisory lock.

Migrations are plain SQL files in ``migrations/`` named the way `asyncpg-trek`
expects (``YYYYMMDD_<from>_up_<to>.sql``, starting from ``initial``). asyncpg-trek
plans the path from the recorded revision to the newest one and runs it in a
serializable transaction; we wrap planning *and* execution in one session-level
advisory lock so the agent, many ingestion jobs and the Helm hook can all start
at once and exactly one of them migrates while the others wait.

Run it alone with ``python -m ragkeeper_knowledge.migrate`` (reads ``DATABASE_URL``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from pathlib import Path

import asyncpg
from asyncpg_trek import Direction, execute, plan
from asyncpg_trek.asyncpg import AsyncpgBackend

from .errors import ConfigurationError, TransientError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATIONS_SCHEMA = "ragkeeper_migrations"
# Any fixed 64-bit key works; this one spells "ragkeepr" in ASCII.
ADVISORY_LOCK_KEY = 0x7261676B65657072
_FILE = re.compile(r"^\d{8}_(?P<from>\w+?)_up_(?P<to>\w+)\.sql$")


def head_revision(directory: Path = MIGRATIONS_DIR) -> str:
    """The newest revision: the one no migration starts from."""
    edges = {}
    for path in directory.iterdir():
        m = _FILE.match(path.name)
        if m:
            edges[m["from"]] = m["to"]
    if not edges:
        raise ConfigurationError(f"no migrations found in {directory}")
    heads = set(edges.values()) - set(edges)
    if len(heads) != 1:
        raise ConfigurationError(f"migrations do not form one chain: heads {sorted(heads)}")
    return heads.pop()


async def current_revision(conn: asyncpg.Connection) -> str | None:
    """Revision recorded in the database, or ``None`` before the first migration."""
    exists = await conn.fetchval("SELECT to_regclass($1)", f"{MIGRATIONS_SCHEMA}.migrations")
    if exists is None:
        return None
    rev: str | None = await conn.fetchval(
        # the schema name is a module constant, not input
        f'SELECT to_revision FROM "{MIGRATIONS_SCHEMA}".migrations ORDER BY id DESC LIMIT 1'  # nosec B608
    )
    return rev


async def migrate(conn: asyncpg.Connection) -> str:
    """Bring the schema to the head revision; safe to call concurrently. Returns it."""
    target = head_revision()
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        if await current_revision(conn) == target:
            return target
        backend = AsyncpgBackend(conn, schema=MIGRATIONS_SCHEMA)
        steps = await plan(backend, MIGRATIONS_DIR, target, Direction.up)
        if steps:
            logger.info("applying %d migration(s) up to %s", len(steps), target)
            await execute(backend, steps)
        return target
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def migrate_dsn(dsn: str) -> str:
    """Connect, migrate, disconnect; database errors become ``TransientError``."""
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise TransientError(f"database unreachable: {type(exc).__name__}") from exc
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        print("DATABASE_URL is not set", file=sys.stderr)  # noqa: T201 - CLI message
        return 2
    try:
        rev = asyncio.run(migrate_dsn(dsn))
    except TransientError as exc:
        print(f"migration failed: {exc}", file=sys.stderr)  # noqa: T201 - CLI message
        return 1
    logger.info("schema at revision %s", rev)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
