"""Versioned schema migrations, applied under a Postgres advisory lock.

docs/architecture.md, invariant 7: migrations under an advisory lock.

Migrations are plain SQL files in ``migrations/`` named the way `asyncpg-trek`
expects (``YYYYMMDD_<from>_up_<to>.sql``, starting from ``initial``). asyncpg-trek
plans the path from the recorded revision to the newest one and runs it in a
serializable transaction; we wrap planning *and* execution in one session-level
advisory lock so the agent, many ingestion jobs and the Helm hook can all start
at once and exactly one of them migrates while the others wait.

Run it alone with ``python -m ragkeeper_knowledge.migrate`` (reads ``DATABASE_URL``, the
migrator's DSN, and optionally ``AGENT_DATABASE_URL``/``INGEST_DATABASE_URL``, whose
users it provisions as members of the duty roles: ``roles.py``). Services call
``migrate()`` at start-up too: at head it changes nothing, so they need no DDL rights.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import asyncpg
from asyncpg_trek import Direction, execute, plan
from asyncpg_trek.asyncpg import AsyncpgBackend

from . import roles
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
    """Bring the schema to the head revision; safe to call concurrently. Returns it.

    At head this reads one row and changes nothing, so services whose role may not
    run DDL start normally. Behind head, a role without the migrator's rights gets a
    ``ConfigurationError`` naming both revisions instead of a half-applied schema.
    """
    target = head_revision()
    if await _recorded(conn) == target:
        return target
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        current = await _recorded(conn)
        if current == target:
            return target
        backend = AsyncpgBackend(conn, schema=MIGRATIONS_SCHEMA)
        try:
            steps = await plan(backend, MIGRATIONS_DIR, target, Direction.up)
            if steps:
                logger.info("applying %d migration(s) up to %s", len(steps), target)
                await execute(backend, steps)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise ConfigurationError(
                f"schema at {current or 'none'}, head is {target}: run the migration as the "
                f"migrator role (role {await conn.fetchval('SELECT current_user')!r} may not: "
                f"{exc})"
            ) from exc
        return target
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def _recorded(conn: asyncpg.Connection) -> str | None:
    """``current_revision``, with a role that may not read the record as a configuration error."""
    try:
        return await current_revision(conn)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ConfigurationError(
            f"cannot read the schema revision ({exc}): grant the role its duty group "
            "(docs/deploy.md, Database roles)"
        ) from exc


async def migrate_dsn(dsn: str, logins: Mapping[str, str] | None = None) -> str:
    """Connect, migrate, grant the duty roles, provision ``logins``, disconnect.

    ``logins`` maps ``AGENT_DATABASE_URL``/``INGEST_DATABASE_URL`` to DSNs whose users
    become members of the agent and ingestion roles (``roles.provision_logins``).
    Database errors become ``TransientError``.
    """
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise TransientError(f"database unreachable: {type(exc).__name__}") from exc
    try:
        await roles.check_logins(conn, logins or {})
        rev = await migrate(conn)
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            await roles.provision_logins(conn, logins or {})
            logger.info("granted %d duty privilege(s)", await roles.apply_grants(conn))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
        return rev
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ConfigurationError(f"the migrating role lacks a privilege: {exc}") from exc
    finally:
        await conn.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        print("DATABASE_URL is not set", file=sys.stderr)  # noqa: T201 - CLI message
        return 2
    try:
        rev = asyncio.run(migrate_dsn(dsn, os.environ))
    except ConfigurationError as exc:
        print(f"migration failed: {exc}", file=sys.stderr)  # noqa: T201 - CLI message
        return 2
    except TransientError as exc:
        print(f"migration failed: {exc}", file=sys.stderr)  # noqa: T201 - CLI message
        return 1
    logger.info("schema at revision %s", rev)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
