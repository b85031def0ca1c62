"""Closed data paths (migration 0004): row-level security on every table, so a Data API's roles
(Supabase's ``anon`` and ``authenticated``) read and write nothing although they hold the usual
table privileges, while the services keep their access.

As in ``test_roles``, a non-superuser migrator (CREATEROLE, BYPASSRLS) migrates a database it
owns and provisions the agent's and the ingestion job's logins (BYPASSRLS); the data goes in
through a real ingestion run, a conversation turn and the rate limiter.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

from ragkeeper_agent.errors import SQLRejected
from ragkeeper_agent.history import ConversationStore
from ragkeeper_agent.memory import MemoryStore
from ragkeeper_agent.ratelimit import RateLimiter
from ragkeeper_agent.tabular import ReadOnlySQL
from ragkeeper_knowledge import KnowledgeStore, create_pool
from ragkeeper_knowledge.errors import ConfigurationError
from ragkeeper_knowledge.migrate import current_revision, migrate_dsn
from ragkeeper_knowledge.roles import LOGIN_ENV

from .test_roles import _as, _login_user, _make_database, ingest_sample, migrated_database

# The schemas ragkeeper creates tables in; every table in them must have RLS.
SCHEMAS = ("public", "ragkeeper_admin", "ragkeeper_migrations")
DATA_API_ROLES = ("anon", "authenticated")
PIPELINE = "local/rls"

# One well-formed row per table, so a refusal is row-level security's and no constraint's.
INSERTS = {
    "public.embedding_model": "INSERT INTO public.embedding_model (singleton, model_name, "
    "dimension) VALUES (true, 'x', 3)",
    "public.rag_pipeline_state": "INSERT INTO public.rag_pipeline_state (pipeline_id, "
    "pipeline_type) VALUES ('api:x', 'api')",
    "public.document_metadata": "INSERT INTO public.document_metadata (id, pipeline_id, "
    "source_id, title, version, content_hash) VALUES ('api:x', 'api', 'x', 'x', '1', 'h')",
    "public.documents": "INSERT INTO public.documents (document_id, pipeline_id, chunk_index, "
    f"content, content_hash) VALUES ('{PIPELINE}:guide.md', 'api', 99, 'x', 'h')",
    "public.document_rows": "INSERT INTO public.document_rows (dataset_id, row_number, row_data) "
    f"VALUES ('{PIPELINE}:sales.csv', 99, '{{}}')",
    "public.conversations": "INSERT INTO public.conversations (session_id, user_id) "
    "VALUES ('api-s', 'api-u')",
    "public.messages": "INSERT INTO public.messages (session_id, role, message) "
    "VALUES ('s-rls', 'user', '{}')",
    "public.requests": "INSERT INTO public.requests (user_id) VALUES ('api-u')",
    "public.memories": "INSERT INTO public.memories (user_id, content, embedding) "
    "VALUES ('api-u', 'x', '[1, 0, 0]')",
    "public.attachments": "INSERT INTO public.attachments (id, session_id, message_id, "
    "file_name, mime_type, size_bytes, sha256) VALUES ('a-rls', 's-rls', 1, 'x.txt', "
    "'text/plain', 1, 'h')",
    "public.image_captions": "INSERT INTO public.image_captions (content_hash, model, caption) "
    "VALUES ('h', 'x', 'x')",
    "public.pipeline_generations": "INSERT INTO public.pipeline_generations (pipeline_id, "
    "generation) VALUES ('api:x', 1)",
    "ragkeeper_admin.duty_grants": "INSERT INTO ragkeeper_admin.duty_grants (duty, privileges, "
    "on_object) VALUES ('agent', 'ALL', 'TABLE public.x')",
    "ragkeeper_migrations.migrations": "INSERT INTO ragkeeper_migrations.migrations "
    "(from_revision, to_revision, timestamp) VALUES ('0004', '9999', now())",
}


@pytest.fixture(scope="module")
async def urls(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A migrated database with documents, a tabular file, an image caption, a conversation with
    an attachment, a request and a memory."""
    found = await migrated_database(pg_admin_url, "rls")
    assert await ingest_sample(found["ingest"], tmp_path_factory.mktemp("rls"), PIPELINE) == 2
    ingest = await create_pool(found["ingest"], max_size=1)
    try:  # what the job keeps for an image it had captioned (tests/rag/test_captions.py)
        await KnowledgeStore(ingest).save_caption("c" * 64, "vision", "a whiteboard")
    finally:
        await ingest.close()
    pool = await create_pool(found["agent"], max_size=1)
    try:
        turn = [
            ModelRequest(parts=[UserPromptPart("when does the backup run?")]),
            ModelResponse(parts=[TextPart("Nightly at two.")]),
        ]
        await ConversationStore(pool).save_turn("s-rls", "alice", turn, title="backup")
        await pool.execute(
            "INSERT INTO attachments (id, session_id, message_id, file_name, mime_type, "
            "size_bytes, sha256) SELECT 'a-1', session_id, min(id), 'notes.txt', 'text/plain', "
            "5, 'h' FROM messages WHERE session_id = 's-rls' GROUP BY session_id"
        )
        await RateLimiter(pool, 5).admit("alice", "chat")
        await MemoryStore(pool).save("alice", "my team is Falcon", [1.0, 0.0], session_id="s-rls")
    finally:
        await pool.close()
    return found


@pytest.fixture(scope="module")
async def data_api(urls: dict[str, str], pg_admin_url: str) -> str:
    """Supabase's roles and default grants in the database; the DSN of its LOGIN role.

    ``anon`` and ``authenticated`` are NOLOGIN; PostgREST logs in as ``authenticator`` (LOGIN,
    NOINHERIT, a member of both) and switches with SET ROLE per request. Supabase grants them
    usage of ``public`` and ALL on its tables and sequences; the other schemas get the same here,
    so every refusal below is row-level security's, not a missing privilege.
    """
    admin = await asyncpg.connect(urls["admin"])
    try:
        db = await admin.fetchval("SELECT current_database()")
        await admin.execute(
            """
            DO $$
            BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
                    CREATE ROLE anon NOLOGIN NOINHERIT;
                END IF;
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
                    CREATE ROLE authenticated NOLOGIN NOINHERIT;
                END IF;
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
                    CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD 'pw-authenticator';  -- pragma: allowlist secret
                END IF;
            END
            $$;
            GRANT anon, authenticated TO authenticator;
            """
        )
        for schema in SCHEMAS:
            await admin.execute(
                f"GRANT USAGE ON SCHEMA {schema} TO anon, authenticated;"
                f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO anon, authenticated;"
                f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO anon, authenticated;"
            )
    finally:
        await admin.close()
    return _as(pg_admin_url, "authenticator", db)


@pytest.fixture
async def admin(urls: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(urls["admin"])
    try:
        yield conn
    finally:
        await conn.close()


async def _relations(conn: asyncpg.Connection, kinds: str) -> list[str]:
    """Qualified names of the relations of ``kinds`` (pg_class.relkind letters) in SCHEMAS."""
    rows = await conn.fetch(
        "SELECT c.oid::regclass::text AS name FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY($1::text[]) AND c.relkind::text = ANY($2::text[]) ORDER BY 1",
        list(SCHEMAS),
        list(kinds),
    )
    # regclass prints public's tables unqualified (public is on the search_path)
    return [r["name"] if "." in r["name"] else f"public.{r['name']}" for r in rows]


async def _counts(conn: asyncpg.Connection, relations: list[str]) -> dict[str, int]:
    return {
        r: await conn.fetchval(f"SELECT count(*) FROM {r}")  # noqa: S608 - catalog names
        for r in relations
    }


async def test_every_table_has_row_level_security(admin: asyncpg.Connection) -> None:
    rows = await admin.fetch(
        "SELECT c.oid::regclass::text AS name, c.relrowsecurity, c.relforcerowsecurity "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p')",
        list(SCHEMAS),
    )
    assert len(rows) == len(INSERTS)
    assert [r["name"] for r in rows if not r["relrowsecurity"]] == []
    # Not forced: the migrator owns the tables and bypasses it (migrations, SECURITY DEFINER).
    assert [r["name"] for r in rows if r["relforcerowsecurity"]] == []


async def test_policies_open_rows_to_the_sql_reader_only(admin: asyncpg.Connection) -> None:
    rows = await admin.fetch(
        "SELECT polrelid::regclass::text AS rel, polcmd::text AS cmd, "
        "ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::regrole::text END "
        "      FROM unnest(polroles) r) AS roles, "
        "pg_get_expr(polqual, polrelid) AS qual "
        "FROM pg_policy ORDER BY 1"
    )
    reader = await admin.fetchval("SELECT ragkeeper_admin.role_name('sqlreader')")
    assert [dict(r) for r in rows] == [
        {"rel": "document_metadata", "cmd": "r", "roles": [reader], "qual": "(schema IS NOT NULL)"},
        {"rel": "document_rows", "cmd": "r", "roles": [reader], "qual": "true"},
    ]


async def test_the_tabular_view_runs_with_the_callers_rights(admin: asyncpg.Connection) -> None:
    """A view with its owner's rights would read document_metadata past RLS for anyone."""
    views = await _relations(admin, "vm")
    assert views == ["public.tabular_datasets"]
    options = await admin.fetchval(
        "SELECT reloptions FROM pg_class WHERE oid = 'public.tabular_datasets'::regclass"
    )
    assert "security_invoker=true" in options


@pytest.mark.parametrize("role", DATA_API_ROLES)
async def test_a_data_api_role_reads_nothing(
    role: str, data_api: str, admin: asyncpg.Connection
) -> None:
    relations = await _relations(admin, "rpvm")
    full = await _counts(admin, relations)
    # The store is not empty: there is something to hide in every public table.
    assert all(full[r] > 0 for r in relations if r.startswith("public.")), full
    conn = await asyncpg.connect(data_api)
    try:
        await conn.execute(f"SET ROLE {role}")
        assert await _counts(conn, relations) == dict.fromkeys(relations, 0)
        # Not even through the SQL tool's function (not granted to PUBLIC).
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT ragkeeper_sql.run_readonly_query('SELECT 1', 1, 100)")
    finally:
        await conn.close()


@pytest.mark.parametrize("role", DATA_API_ROLES)
@pytest.mark.parametrize("table", sorted(INSERTS))
async def test_a_data_api_role_writes_nothing(
    role: str, table: str, data_api: str, admin: asyncpg.Connection
) -> None:
    before = await _counts(admin, [table])
    snapshot = await admin.fetch(f"SELECT * FROM {table}")  # noqa: S608 - fixed names
    conn = await asyncpg.connect(data_api)
    try:
        await conn.execute(f"SET ROLE {role}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute(INSERTS[table])
        column = await conn.fetchval(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
            "AND NOT attisdropped AND attgenerated = '' AND attidentity = '' ORDER BY attnum "
            "LIMIT 1",
            table,
        )
        # UPDATE and DELETE see no row, so they change none.
        assert await conn.execute(f'UPDATE {table} SET "{column}" = "{column}"') == "UPDATE 0"
        assert await conn.execute(f"DELETE FROM {table}") == "DELETE 0"
    finally:
        await conn.close()
    assert await _counts(admin, [table]) == before
    assert await admin.fetch(f"SELECT * FROM {table}") == snapshot  # noqa: S608


@pytest.mark.parametrize("duty", ["agent", "ingest"])
async def test_the_duty_logins_see_every_row_they_may_read(
    duty: str, urls: dict[str, str], admin: asyncpg.Connection
) -> None:
    """RLS takes nothing from the services: each login reads what the owner reads."""
    login = await _login_user(urls[duty])
    readable = [
        r
        for r in await _relations(admin, "rpv")
        if await admin.fetchval("SELECT has_table_privilege($1, $2, 'SELECT')", login, r)
    ]
    assert "public.documents" in readable
    conn = await asyncpg.connect(urls[duty])
    try:
        assert not await conn.fetchval("SELECT row_security_active('public.documents')")
        assert await _counts(conn, readable) == await _counts(admin, readable)
    finally:
        await conn.close()


async def test_the_sql_tool_reads_what_it_read_before(
    urls: dict[str, str], admin: asyncpg.Connection
) -> None:
    """Its reader sees the tabular rows and datasets; of document_metadata only what the view
    shows (the tabular files' rows, not their paths)."""
    pool = await create_pool(urls["agent"], max_size=1)
    try:
        sql = ReadOnlySQL(pool, timeout_ms=3000, max_rows=50)
        rows = await sql.query("SELECT row_data->>'region' AS r FROM document_rows ORDER BY 1")
        assert rows == [{"r": "north"}, {"r": "south"}]
        datasets = await sql.query("SELECT dataset_id FROM tabular_datasets")
        assert datasets == [{"dataset_id": f"{PIPELINE}:sales.csv"}]
        # Two files, one tabular: the reader's policy shows that one only.
        assert await admin.fetchval("SELECT count(*) FROM document_metadata") == 2
        assert await sql.query("SELECT id AS dataset_id FROM document_metadata") == datasets
        for refused in (
            "SELECT path FROM document_metadata",
            "SELECT content FROM documents",
            "SELECT * FROM conversations",
            "SELECT * FROM memories",
        ):
            with pytest.raises(SQLRejected):
                await sql.query(refused)
    finally:
        await pool.close()


async def test_a_login_subject_to_row_level_security_stops_at_start_up(
    urls: dict[str, str], pg_admin_url: str, admin: asyncpg.Connection
) -> None:
    """A DBA's login without BYPASSRLS would read nothing: the service says why and how to fix."""
    db = await admin.fetchval("SELECT current_database()")
    user = f"nobypass_{uuid.uuid4().hex[:6]}"
    group = await admin.fetchval("SELECT ragkeeper_admin.role_name('agent')")
    await admin.execute(f"CREATE ROLE {user} LOGIN PASSWORD 'pw-{user}' IN ROLE {group}")
    with pytest.raises(ConfigurationError) as caught:
        await create_pool(_as(pg_admin_url, user, db), max_size=1)
    assert f"login role {user} is subject to row-level security" in str(caught.value)
    assert f"ALTER ROLE {user} BYPASSRLS" in str(caught.value)


async def test_a_migrator_that_cannot_give_bypassrls_migrates_nothing(pg_admin_url: str) -> None:
    """CREATEROLE without BYPASSRLS could create the logins but not let them read: the
    migration Job stops before the first statement and names the fix."""
    tag = uuid.uuid4().hex[:6]
    db, migrator = f"nobyp_{tag}", f"migrator_{tag}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f"CREATE ROLE {migrator} LOGIN CREATEROLE PASSWORD 'pw-{migrator}'")
        await _make_database(pg_admin_url, db, migrator)
    finally:
        await admin.close()
    logins = {LOGIN_ENV["agent"]: _as(pg_admin_url, f"agent_{tag}", db)}
    with pytest.raises(ConfigurationError) as caught:
        await migrate_dsn(_as(pg_admin_url, migrator, db), logins)
    assert f"as a superuser, run 'ALTER ROLE {migrator} BYPASSRLS'" in str(caught.value)
    conn = await asyncpg.connect(_as(pg_admin_url, "postgres", db))
    try:
        assert await current_revision(conn) is None
        assert not await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", f"agent_{tag}"
        )
    finally:
        await conn.close()
