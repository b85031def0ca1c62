"""asyncpg pool with the pgvector codec registered once per connection."""

from __future__ import annotations

from typing import Any

import asyncpg
from pgvector.asyncpg import register_vector

from .errors import TransientError
from .migrate import migrate
from .roles import check_row_security


async def _init_connection(conn: asyncpg.Connection) -> None:
    await register_vector(conn)


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    run_migrations: bool = True,
    **kwargs: Any,
) -> asyncpg.Pool:
    """Open a pool; migrate first (the vector type must exist before the codec).

    With migrations, the login is first checked to bypass row-level security
    (``roles.check_row_security``): a service that would read nothing stops at start-up.

    Connection failures become ``TransientError`` so callers can map them to
    "retry later" without inspecting driver exceptions.
    """
    try:
        if run_migrations:
            conn = await asyncpg.connect(dsn)
            try:
                await check_row_security(conn)  # else the revision itself reads as none
                await migrate(conn)
            finally:
                await conn.close()
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection, **kwargs
        )
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
        raise TransientError(f"database unreachable: {type(exc).__name__}: {exc}") from exc
    return pool
