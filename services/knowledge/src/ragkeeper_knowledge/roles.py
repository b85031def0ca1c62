"""Login roles by duty, provisioned by the migration Job (docs/deploy.md, "Database roles").

Migration 0003 creates one NOLOGIN group role per duty and database
(``ragkeeper_admin.role_name('agent' | 'ingest' | 'sqlreader')``) and grants each
its privileges. The services log in as members of those groups: given the agent's
and the ingestion job's DSNs (``AGENT_DATABASE_URL``, ``INGEST_DATABASE_URL``), the
migrator creates or updates those users with the DSNs' passwords and makes them
members. A DSN whose user is the migrator itself (one login for everything, as in
the local stack) is left alone.

Every table has row-level security with no policy for these logins (migration 0004), so
each has ``BYPASSRLS``: it reads and writes as before, with the same plans. Giving a role
that attribute takes a superuser or a role that has it itself (Postgres 16 on), so the
migrator needs it too; ``check_logins`` says so before anything is migrated.
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


async def _me(conn: asyncpg.Connection) -> asyncpg.Record:
    """The migrating role: its name, whether it may create roles and give them BYPASSRLS."""
    me = await conn.fetchrow(
        "SELECT current_user AS name, rolcreaterole OR rolsuper AS may, "
        "rolsuper OR (rolcreaterole AND rolbypassrls) AS may_bypass "
        "FROM pg_roles WHERE rolname = current_user"
    )
    if me is None:  # a role dropped while logged in
        raise ConfigurationError("the migrating role no longer exists")
    return me


def _logins(env: Mapping[str, str], me: asyncpg.Record) -> dict[str, str]:
    """The duty logins ``env`` names, by duty, leaving out the migrator's own."""
    wanted = {duty: env[var] for duty, var in LOGIN_ENV.items() if env.get(var)}
    return {duty: dsn for duty, dsn in wanted.items() if dsn_credentials(dsn)[0] != me["name"]}


async def check_logins(conn: asyncpg.Connection, env: Mapping[str, str]) -> None:
    """Stop before migrating when a duty login would end up subject to row-level security.

    A login that already has ``BYPASSRLS`` is fine, and so is one the migrator can give it.
    One that does not exist and that the migrator may not create is left to the DBA.
    Otherwise the services would read nothing: ``ConfigurationError`` with the statement to run.
    """
    me = await _me(conn)
    if me["may_bypass"]:
        return
    for dsn in _logins(env, me).values():
        user = dsn_credentials(dsn)[0]
        row = await conn.fetchrow("SELECT rolbypassrls FROM pg_roles WHERE rolname = $1", user)
        if (row is not None and row["rolbypassrls"]) or (row is None and not me["may"]):
            continue
        quoted = await conn.fetchval("SELECT quote_ident($1)", me["name"] if me["may"] else user)
        fix = f"ALTER ROLE {quoted} BYPASSRLS"
        raise ConfigurationError(
            f"login role {user!r} must bypass row-level security and {me['name']!r} cannot give "
            f'it that: as a superuser, run {fix!r} (docs/deploy.md, "Database roles")'
        )


async def provision_logins(conn: asyncpg.Connection, env: Mapping[str, str]) -> list[str]:
    """Create or update the login roles named in ``env``'s DSNs; the users provisioned."""
    me = await _me(conn)
    wanted = _logins(env, me)
    if not wanted:
        return []
    if not me["may"]:
        logger.warning("the migrating role may not create roles: login roles left to the DBA")
        return []
    done = []
    for duty, dsn in wanted.items():
        user, password = dsn_credentials(dsn)
        group = await role_name(conn, duty)
        await _provision(conn, user, password, group, bypass=me["may_bypass"])
        done.append(user)
    return done


async def _provision(
    conn: asyncpg.Connection, user: str, password: str | None, group: str, *, bypass: bool
) -> None:
    """One login role: created or its password updated, a member of ``group`` and nothing else.

    ``bypass`` gives it BYPASSRLS; without it (a migrator that cannot) the role must have it
    already (``check_logins``).
    """
    exists = await conn.fetchval("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", user)
    verb = "ALTER ROLE %I WITH" if exists else "CREATE ROLE %I"
    attributes = " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE" + (" BYPASSRLS" if bypass else "")
    secret = "" if password is None else " PASSWORD %L"
    # format() quotes the name and the password server-side; nothing is interpolated here.
    statement = await conn.fetchval(
        "SELECT format($1::text || $2::text || $3::text, $4::text, $5::text)",
        verb,
        attributes,
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


async def check_row_security(conn: asyncpg.Connection) -> None:
    """Stop a service whose login is subject to row-level security (it would read no row).

    The owner and a ``BYPASSRLS`` login pass; any other gets ``ConfigurationError`` with the fix.
    A database not yet migrated to 0004 has no row-level security, so nothing to check.
    """
    active = await conn.fetchval(
        "SELECT to_regclass('public.documents') IS NOT NULL "
        "AND row_security_active('public.documents')"
    )
    if active:
        user = await conn.fetchval("SELECT quote_ident(current_user)")
        raise ConfigurationError(
            f"login role {user} is subject to row-level security and would read no documents: "
            f"as a superuser, run 'ALTER ROLE {user} BYPASSRLS' "
            '(docs/deploy.md, "Database roles")'
        )
