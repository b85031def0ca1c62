"""Login roles by duty, provisioned by the migration Job (docs/deploy.md, "Database roles").

Migration 0003 creates one NOLOGIN group role per duty and database
(``ragkeeper_admin.role_name('agent' | 'ingest' | 'sqlreader')``) and grants each
its privileges. The services log in as members of those groups: given the agent's
and the ingestion job's DSNs (``AGENT_DATABASE_URL``, ``INGEST_DATABASE_URL``), the
migrator creates or updates those users with the DSNs' passwords and makes them
members. A DSN whose user is the migrator itself (one login for everything, as in
the local stack) is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import asyncpg

from .errors import ConfigurationError

logger = logging.getLogger(__name__)

# Environment variable holding each duty's DSN, read by ``python -m ragkeeper_knowledge.migrate``.
LOGIN_ENV = {"agent": "AGENT_DATABASE_URL", "ingest": "INGEST_DATABASE_URL"}


def dsn_credentials(dsn: str) -> tuple[str, str | None]:
    """User and password of a ``postgresql://user[:password]@host/db`` DSN.

    No password is fine (certificate or peer authentication): the role is then provisioned
    without one, and an existing role keeps its own.
    """
    parts = urlsplit(dsn)
    if not parts.username:
        raise ConfigurationError("a login DSN must carry a user name")
    password = None if parts.password is None else unquote(parts.password)
    return unquote(parts.username), password


async def role_name(conn: asyncpg.Connection, duty: str) -> str:
    """This database's group role for ``duty`` (``<database>_<duty>``, see migration 0003)."""
    name: str = await conn.fetchval("SELECT ragkeeper_admin.role_name($1)", duty)
    return name


async def apply_grants(conn: asyncpg.Connection) -> int:
    """Grant every duty role that exists its privileges again (idempotent); how many grants."""
    count: int = await conn.fetchval("SELECT ragkeeper_admin.apply_grants()")
    return count


async def provision_logins(conn: asyncpg.Connection, env: Mapping[str, str]) -> list[str]:
    """Create or update the login roles named in ``env``'s DSNs; the users provisioned."""
    wanted = {duty: env[var] for duty, var in LOGIN_ENV.items() if env.get(var)}
    if not wanted:
        return []
    me = await conn.fetchrow(
        "SELECT current_user AS name, rolcreaterole OR rolsuper AS may "
        "FROM pg_roles WHERE rolname = current_user"
    )
    if me is None or not me["may"]:
        logger.warning("the migrating role may not create roles: login roles left to the DBA")
        return []
    done = []
    for duty, dsn in wanted.items():
        user, password = dsn_credentials(dsn)
        if user == me["name"]:
            continue
        await _provision(conn, user, password, await role_name(conn, duty))
        done.append(user)
    return done


async def _provision(conn: asyncpg.Connection, user: str, password: str | None, group: str) -> None:
    """One login role: created or its password updated, a member of ``group`` and nothing else."""
    exists = await conn.fetchval("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", user)
    verb = "ALTER ROLE %I WITH" if exists else "CREATE ROLE %I"
    secret = "" if password is None else " PASSWORD %L"
    # format() quotes the name and the password server-side; nothing is interpolated here.
    statement = await conn.fetchval(
        "SELECT format($1::text || ' LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE' || $2::text, "
        "$3::text, $4::text)",
        verb,
        secret,
        user,
        password,
    )
    try:
        await conn.execute(statement)
        await conn.execute(
            await conn.fetchval("SELECT format('GRANT %I TO %I', $1::text, $2::text)", group, user)
        )
    except asyncpg.PostgresError as exc:
        raise ConfigurationError(
            f"cannot provision login role {user!r} in {group!r}: {type(exc).__name__}: "
            f"{exc.args[0] if exc.args else ''}"
        ) from exc
    logger.info("login role %s is a member of %s", user, group)
