"""Database roles by duty (migration 0003, ``ragkeeper_knowledge.roles``), proven by logging in.

A non-superuser migrator (CREATEROLE and BYPASSRLS, owning the database, as the chart's bundled
database makes it) migrates and provisions the agent's and the ingestion job's logins from their DSNs.
Then each login does its job for real (an ingestion run, an agent search, a conversation, the
SQL tool) and is refused everything outside its duty.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from ragkeeper_agent.errors import SQLRejected
from ragkeeper_agent.history import ConversationStore
from ragkeeper_agent.ratelimit import RateLimiter
from ragkeeper_agent.tabular import ReadOnlySQL
from ragkeeper_knowledge import KnowledgeStore, create_pool
from ragkeeper_knowledge.embedding.hashing import HashingEmbedder
from ragkeeper_knowledge.errors import ConfigurationError
from ragkeeper_knowledge.migrate import head_revision, migrate_dsn
from ragkeeper_knowledge.roles import LOGIN_ENV

from ..rag.test_cli import job_env, run_job

PIPELINE = "local/roles"


def _as(admin_url: str, user: str, database: str) -> str:
    """``admin_url`` (the embedded server's socket URL) for another user and database."""
    url = re.sub(r"^postgresql://[^@]*@", f"postgresql://{user}:pw-{user}@", admin_url)
    return re.sub(r"/postgres\?", f"/{database}?", url, count=1)


async def _make_database(admin_url: str, name: str, owner: str) -> None:
    """As the bundled database's init script: the database owned by the migrator, with vector."""
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(_as(admin_url, "postgres", name))
    try:
        await conn.execute("CREATE EXTENSION vector")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def urls(pg_admin_url: str) -> dict[str, str]:
    """A migrated database; DSNs of its migrator, agent and ingest logins."""
    return await migrated_database(pg_admin_url, "roles")


async def migrated_database(pg_admin_url: str, prefix: str) -> dict[str, str]:
    """A database owned and migrated by a CREATEROLE migrator that provisions the agent's and the
    ingestion job's logins; DSNs by login (``migrator``, ``agent``, ``ingest``, ``admin``)."""
    tag = uuid.uuid4().hex[:6]
    db, names = f"{prefix}_{tag}", {d: f"{d}_{tag}" for d in ("migrator", "agent", "ingest")}
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(
            f'CREATE ROLE "{names["migrator"]}" LOGIN CREATEROLE BYPASSRLS '
            f"PASSWORD 'pw-{names['migrator']}'"
        )
    finally:
        await admin.close()
    await _make_database(pg_admin_url, db, names["migrator"])
    found = {duty: _as(pg_admin_url, user, db) for duty, user in names.items()}
    logins = {LOGIN_ENV["agent"]: found["agent"], LOGIN_ENV["ingest"]: found["ingest"]}
    assert await migrate_dsn(found["migrator"], logins) == head_revision()
    return found | {"admin": _as(pg_admin_url, "postgres", db)}


@pytest.fixture(scope="module")
async def ingested(urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> int:
    """A real ingestion run with the ingest login's DSN on the fresh store (first sync)."""
    return await ingest_sample(urls["ingest"], tmp_path_factory.mktemp("roles"), PIPELINE)


async def ingest_sample(dsn: str, tmp: Path, pipeline: str) -> int:
    """Run the ingestion job with ``dsn`` over a guide (Markdown) and a CSV; files added."""
    folder = tmp / "docs"
    folder.mkdir()
    (folder / "guide.md").write_text("# Guide\n\nThe backup runs nightly at two.")
    (folder / "sales.csv").write_text("region,amount\nnorth,120\nsouth,80\n")
    env = job_env(dsn, tmp, RAG_PIPELINE_ID=pipeline, RAG_WATCH_DIRECTORY=str(folder))
    code, stats, stderr = run_job(env, "--pipeline", "local", "--mode", "single")
    assert (code, stats["status"]) == (0, "success"), stderr
    return int(stats["files_added"])


@pytest.fixture
async def as_agent(urls: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(urls["agent"], max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def as_ingest(urls: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(urls["ingest"])
    try:
        yield conn
    finally:
        await conn.close()


async def test_logins_are_provisioned_members_of_their_duty_roles(urls: dict[str, str]) -> None:
    conn = await asyncpg.connect(urls["admin"])
    try:
        for duty in ("agent", "ingest"):
            user = await _login_user(urls[duty])
            row = await conn.fetchrow(
                "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, "
                "pg_has_role($1, ragkeeper_admin.role_name($2), 'MEMBER') AS member "
                "FROM pg_roles WHERE rolname = $1",
                user,
                duty,
            )
            assert dict(row) == {
                "rolcanlogin": True,
                "rolsuper": False,
                "rolcreaterole": False,
                "rolcreatedb": False,
                "rolbypassrls": True,
                "member": True,
            }
        migrator = await _login_user(urls["migrator"])
        assert await conn.fetchval("SELECT NOT rolsuper FROM pg_roles WHERE rolname = $1", migrator)
    finally:
        await conn.close()


async def _login_user(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        user: str = await conn.fetchval("SELECT current_user")
        return user
    finally:
        await conn.close()


async def test_ingestion_run_with_the_ingest_login_builds_the_store(
    ingested: int, urls: dict[str, str]
) -> None:
    assert ingested == 2
    conn = await asyncpg.connect(urls["admin"])
    try:
        # The first sync's DDL went through the migrator's SECURITY DEFINER functions.
        assert (
            await conn.fetchval(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'documents'::regclass AND attname = 'embedding'"
            )
            == "vector(384)"
        )
        assert await conn.fetchval("SELECT to_regclass('documents_embedding_hnsw') IS NOT NULL")
        owner = await conn.fetchval(
            "SELECT relowner::regrole::text FROM pg_class "
            "WHERE relname = 'documents_embedding_hnsw'"
        )
        assert owner == await _login_user(urls["migrator"])
    finally:
        await conn.close()


@pytest.mark.parametrize("table", ["conversations", "messages", "requests"])
async def test_ingest_cannot_read_the_agents_tables(
    ingested: int, as_ingest: asyncpg.Connection, table: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_ingest.fetch(f"SELECT * FROM {table}")  # noqa: S608 - fixed names


async def test_ingest_writes_documents_and_its_state(ingested: int, urls: dict[str, str]) -> None:
    pool = await create_pool(urls["ingest"], max_size=2)
    try:
        store = KnowledgeStore(pool)
        assert await store.ensure_vector_index() is False  # built once, by the job
        assert await store.count_documents(PIPELINE) == 2
        await store.save_state("local/other", "local", {"k": 1})
        assert await store.purge_pipeline("local/other") == 0
    finally:
        await pool.close()


async def test_agent_searches_keeps_conversations_and_queries_rows(
    ingested: int, as_agent: asyncpg.Pool
) -> None:
    store = KnowledgeStore(as_agent)
    # The ingestion login's two document transactions advanced the pipeline's generation.
    assert await store.generation(PIPELINE) == 2
    model = await store.embedding_model()
    assert model is not None
    embedder = HashingEmbedder(model[1])
    query = "when does the backup run"
    hits = await store.search(query, (await embedder.embed([query]))[0], k=3)
    assert any("nightly" in h.content for h in hits)
    conversations = ConversationStore(as_agent)
    await conversations.save_turn("s-roles", "alice", [], title="t")
    assert (await conversations.get("s-roles", "alice")) is not None
    await RateLimiter(as_agent, 5).admit("alice", "chat")
    sql = ReadOnlySQL(as_agent, timeout_ms=3000, max_rows=10)
    rows = await sql.query("SELECT row_data->>'region' AS r FROM document_rows ORDER BY 1")
    assert rows == [{"r": "north"}, {"r": "south"}]
    with pytest.raises(SQLRejected):
        await sql.query("SELECT * FROM conversations")


DENIED = {
    "ingest": {
        "create_table": "CREATE TABLE pwned (id int)",
        "alter_documents": "ALTER TABLE documents ADD COLUMN pwned int",
        "drop_index": "DROP INDEX documents_embedding_hnsw",
        "change_model": "UPDATE embedding_model SET model_name = 'other'",
        "forget_model": "DELETE FROM embedding_model",
        "call_sql_tool": "SELECT ragkeeper_sql.run_readonly_query('SELECT 1', 1, 100)",
        "apply_grants": "SELECT ragkeeper_admin.apply_grants()",
        "create_schema": "CREATE SCHEMA pwned",
    },
    "agent": {
        "create_table": "CREATE TABLE pwned (id int)",
        "alter_documents": "ALTER TABLE documents ADD COLUMN pwned int",
        "drop_table": "DROP TABLE messages",
        "write_documents": "DELETE FROM document_metadata",
        "write_state": "DELETE FROM rag_pipeline_state",
        "ddl_function": "SELECT ragkeeper_admin.create_vector_index()",
        "create_schema": "CREATE SCHEMA pwned",
    },
}


@pytest.mark.parametrize(
    ("duty", "name"), [(duty, name) for duty, cases in DENIED.items() for name in sorted(cases)]
)
async def test_each_login_is_refused_outside_its_duty(
    ingested: int, urls: dict[str, str], duty: str, name: str
) -> None:
    conn = await asyncpg.connect(urls[duty])
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(DENIED[duty][name])
    finally:
        await conn.close()


async def test_a_service_role_on_a_schema_behind_head_fails_clearly(
    ingested: int, urls: dict[str, str]
) -> None:
    """The agent's login may not migrate: start-up names both revisions instead of DDL errors."""
    head = head_revision()
    admin = await asyncpg.connect(urls["admin"])
    try:
        last = await admin.fetchval("SELECT max(id) FROM ragkeeper_migrations.migrations")
        before = await admin.fetchval(
            "SELECT from_revision FROM ragkeeper_migrations.migrations WHERE id = $1", last
        )
        await admin.execute(
            "UPDATE ragkeeper_migrations.migrations SET to_revision = from_revision WHERE id = $1",
            last,
        )
        try:
            with pytest.raises(ConfigurationError) as caught:
                await create_pool(urls["agent"], max_size=1)
        finally:
            await admin.execute(
                "UPDATE ragkeeper_migrations.migrations SET to_revision = $2 WHERE id = $1",
                last,
                head,
            )
    finally:
        await admin.close()
    assert f"schema at {before}, head is {head}: run the migration as the migrator role" in str(
        caught.value
    )


async def test_the_sql_reader_role_is_per_database(urls: dict[str, str], pg_admin_url: str) -> None:
    """Two databases of one cluster, even with long names alike up to 63 bytes, never share it."""
    migrator = await _login_user(urls["migrator"])
    stem = "r" * 60
    readers = {await _reader(urls["admin"])}
    for suffix in ("one", "two"):
        name = f"{stem}{suffix}"
        await _make_database(pg_admin_url, name, migrator)
        await migrate_dsn(_as(pg_admin_url, migrator, name))
        readers.add(await _reader(_as(pg_admin_url, "postgres", name)))
    assert len(readers) == 3
    assert all(len(r.encode()) <= 63 for r in readers)


async def _reader(dsn: str) -> str:
    """The owner of the SQL tool's function in that database (which runs every model query)."""
    conn = await asyncpg.connect(dsn)
    try:
        owner: str = await conn.fetchval(
            "SELECT proowner::regrole::text FROM pg_proc WHERE proname = 'run_readonly_query'"
        )
        assert owner == await conn.fetchval("SELECT ragkeeper_admin.role_name('sqlreader')")
        return owner
    finally:
        await conn.close()


def test_login_env_names_are_documented() -> None:
    deploy = (Path(__file__).parents[2] / "docs" / "deploy.md").read_text()
    assert all(var in deploy for var in LOGIN_ENV.values())


async def test_a_dba_managed_database_migrates_without_createrole(pg_admin_url: str) -> None:
    """docs/deploy.md's statements for a DBA: the migrator has no CREATEROLE, roles exist."""
    tag = uuid.uuid4().hex[:6]
    db, migrator = f"dba_{tag}", f"migrator_{tag}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f"CREATE ROLE {migrator} LOGIN")
        await _make_database(pg_admin_url, db, migrator)
        for duty in ("agent", "ingest", "sqlreader"):
            await admin.execute(f"CREATE ROLE {db}_{duty} NOLOGIN")
        await admin.execute(f"GRANT {db}_sqlreader TO {migrator}")
        await admin.execute(f"CREATE ROLE {db}_agent_login LOGIN BYPASSRLS IN ROLE {db}_agent")
    finally:
        await admin.close()
    login = _as(pg_admin_url, f"{db}_agent_login", db)
    # No CREATEROLE: the logins in the env are left to the DBA, the schema is migrated.
    assert await migrate_dsn(_as(pg_admin_url, migrator, db), {"AGENT_DATABASE_URL": login})
    assert await _reader(_as(pg_admin_url, "postgres", db)) == f"{db}_sqlreader"
    pool = await create_pool(login, max_size=1)
    try:
        assert await KnowledgeStore(pool).count_documents() == 0
    finally:
        await pool.close()


async def test_logins_without_a_password_and_one_dsn_for_all(pg_admin_url: str) -> None:
    """A DSN without a password (certificate or trust authentication) provisions a role without
    one; a DSN naming the migrator itself (one login for everything) is left alone."""
    tag = uuid.uuid4().hex[:6]
    db, migrator, agent = f"nopw_{tag}", f"migrator_{tag}", f"agent_{tag}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f"CREATE ROLE {migrator} LOGIN CREATEROLE BYPASSRLS")
        await _make_database(pg_admin_url, db, migrator)
    finally:
        await admin.close()
    own = re.sub(r"^postgresql://[^@]*@", f"postgresql://{migrator}@", pg_admin_url)
    own = re.sub(r"/postgres\?", f"/{db}?", own, count=1)
    no_password = own.replace(f"//{migrator}@", f"//{agent}@")
    logins = {"AGENT_DATABASE_URL": no_password, "INGEST_DATABASE_URL": own}
    assert await migrate_dsn(own, logins) == head_revision()
    admin = await asyncpg.connect(_as(pg_admin_url, "postgres", db))
    try:
        row = await admin.fetchrow(
            "SELECT rolcanlogin, rolpassword IS NULL AS no_password, "
            "pg_has_role(rolname, $2, 'MEMBER') AS member FROM pg_authid WHERE rolname = $1",
            agent,
            f"{db}_agent",
        )
        ingest_members = await admin.fetchval(
            "SELECT count(*) FROM pg_auth_members "
            "WHERE roleid = $1::regrole AND member <> $2::regrole",
            f"{db}_ingest",
            migrator,
        )
    finally:
        await admin.close()
    assert dict(row) == {"rolcanlogin": True, "no_password": True, "member": True}
    assert ingest_members == 0  # the migrator's own DSN provisions nobody
