"""The read-only SQL tool: it reads tabular rows, and every escape attempt fails in Postgres.

The test database is owned by a superuser (the embedded server's), which is the
worst case: a plain ``SET LOCAL ROLE`` design would be undone by the query itself.
"""

from __future__ import annotations

import asyncpg
import pytest

from ragkeeper_agent.errors import SQLRejected
from ragkeeper_agent.tabular import MAX_RESULT_BYTES, ReadOnlySQL, render_rows
from ragkeeper_knowledge import KnowledgeStore


@pytest.fixture(scope="module")
def sql(pool: asyncpg.Pool, seeded: KnowledgeStore) -> ReadOnlySQL:
    return ReadOnlySQL(pool, timeout_ms=500, max_rows=50)


async def test_select_over_rows_works(sql: ReadOnlySQL) -> None:
    rows = await sql.query(
        "SELECT row_data->>'region' AS region, sum((row_data->>'amount')::int) AS total "
        "FROM document_rows GROUP BY 1 ORDER BY 1"
    )
    assert rows == [{"region": "north", "total": 150}, {"region": "south", "total": 80}]
    datasets = await sql.query("SELECT title, schema FROM tabular_datasets")
    assert datasets == [{"title": "Sales", "schema": {"": ["region", "amount"]}}]
    assert "north" in render_rows(rows)


async def test_rows_are_capped(pool: asyncpg.Pool, seeded: KnowledgeStore) -> None:
    capped = ReadOnlySQL(pool, timeout_ms=500, max_rows=2)
    assert len(await capped.query("SELECT * FROM generate_series(1, 100)")) == 2


ESCAPES = {
    "insert": "INSERT INTO document_rows (dataset_id, row_number, row_data) VALUES ('x', 1, '{}')",
    "update_cte": "WITH d AS (UPDATE document_rows SET row_number = 0 RETURNING 1) SELECT * FROM d",
    "delete_cte": "WITH d AS (DELETE FROM document_rows RETURNING 1) SELECT * FROM d",
    "multi_statement": "SELECT 1; DROP TABLE document_rows",
    "subquery_breakout": "SELECT 1) AS sub; DELETE FROM document_rows; SELECT * FROM (SELECT 1",
    "ddl": "CREATE TABLE pwned (id int)",
    "ddl_in_select": "SELECT 1 FROM (SELECT 1) t; CREATE TABLE pwned (id int)",
    "other_table": "SELECT * FROM conversations",
    "chunks_table": "SELECT content FROM documents",
    "metadata_paths": "SELECT path FROM document_metadata",
    "pg_read_file": "SELECT pg_read_file('/etc/passwd')",
    "pg_ls_dir": "SELECT pg_ls_dir('.')",
    "pg_stat_file": "SELECT pg_stat_file('postgresql.conf')",
    "lo_import": "SELECT lo_import('/etc/passwd')",
    "copy_program": "COPY (SELECT 1) TO PROGRAM 'touch /tmp/pwned'",
    "set_role": "SELECT set_config('role', session_user, false)",
    "set_role_local": "SELECT set_config('role', 'postgres', true)",
    "session_authorization": "SELECT set_config('session_authorization', session_user, false)",
    "reset_role": "RESET ROLE",
    "nextval_write": "SELECT nextval('document_rows_id_seq')",
    "read_write_switch": "SELECT set_config('transaction_read_only', 'off', true)",
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
async def test_escape_attempt_fails(
    name: str, sql: ReadOnlySQL, admin_conn: asyncpg.Connection
) -> None:
    before = await admin_conn.fetchval("SELECT count(*) FROM document_rows")
    with pytest.raises(SQLRejected):
        await sql.query(ESCAPES[name])
    assert await admin_conn.fetchval("SELECT count(*) FROM document_rows") == before
    assert await admin_conn.fetchval("SELECT to_regclass('pwned')") is None


async def _reader(conn: asyncpg.Connection) -> str:
    """This database's reader role (migration 0003 names it after the database)."""
    name: str = await conn.fetchval("SELECT ragkeeper_admin.role_name('sqlreader')")
    return name


async def test_query_runs_as_the_reader_role(
    sql: ReadOnlySQL, admin_conn: asyncpg.Connection
) -> None:
    rows = await sql.query("SELECT current_user AS cu, current_setting('transaction_read_only') r")
    db = await admin_conn.fetchval("SELECT current_database()")
    assert rows == [{"cu": f"{db}_sqlreader", "r": "on"}]
    assert rows[0]["cu"] == await _reader(admin_conn)


async def test_a_huge_value_never_reaches_the_agent(
    pool: asyncpg.Pool, seeded: KnowledgeStore
) -> None:
    """The byte cap is enforced inside the function: 60 MB are refused, not sent and cut."""
    sql = ReadOnlySQL(pool, timeout_ms=3000, max_rows=200)  # the agent's default settings
    with pytest.raises(SQLRejected, match="result too large") as caught:
        await sql.query("SELECT repeat('x', 60000000) AS big")
    assert str(MAX_RESULT_BYTES) in str(caught.value)


async def test_the_byte_cap_counts_every_row(pool: asyncpg.Pool, seeded: KnowledgeStore) -> None:
    small = ReadOnlySQL(pool, timeout_ms=2000, max_rows=1000, max_bytes=4096)
    fits = await small.query("SELECT repeat('x', 100) AS v FROM generate_series(1, 20)")
    assert len(fits) == 20
    with pytest.raises(SQLRejected, match="result too large: over 4096 bytes"):
        await small.query("SELECT repeat('x', 100) AS v FROM generate_series(1, 200)")


async def test_the_function_returns_at_most_max_bytes(admin_conn: asyncpg.Connection) -> None:
    async with admin_conn.transaction(readonly=True):
        text = await admin_conn.fetchval(
            "SELECT ragkeeper_sql.run_readonly_query("
            "'SELECT repeat(''y'', 50) AS v FROM generate_series(1, 30)', 1000, 2000)::text"
        )
    assert len(text.encode()) <= 2000
    with pytest.raises(asyncpg.ProgramLimitExceededError):
        async with admin_conn.transaction(readonly=True):
            await admin_conn.fetchval(
                "SELECT ragkeeper_sql.run_readonly_query('SELECT repeat(''x'', 60000000)', 5, 2000)"
            )


async def test_function_search_path_puts_pg_catalog_first(admin_conn: asyncpg.Connection) -> None:
    config = await admin_conn.fetchval(
        "SELECT proconfig FROM pg_proc WHERE proname = 'run_readonly_query'"
    )
    assert config == ["search_path=pg_catalog, public, pg_temp"]


async def test_statement_timeout_cancels_slow_query(sql: ReadOnlySQL) -> None:
    with pytest.raises(SQLRejected, match="statement timeout"):
        await sql.query("SELECT pg_sleep(30)")


async def test_query_cannot_lift_its_own_timeout(sql: ReadOnlySQL) -> None:
    with pytest.raises(SQLRejected, match="statement timeout"):
        await sql.query(
            "SELECT set_config('statement_timeout', '0', false) AS a, pg_sleep(30) AS b"
        )


async def test_session_settings_and_locks_do_not_outlive_the_query(
    pool: asyncpg.Pool, sql: ReadOnlySQL, admin_conn: asyncpg.Connection
) -> None:
    await sql.query("SELECT set_config('work_mem', '64kB', false) AS w")
    await sql.query("SELECT pg_advisory_lock(7261) AS l")
    # Session-level advisory locks survive a rollback; the pool's reset must release them.
    assert await admin_conn.fetchval("SELECT pg_try_advisory_lock(7261)") is True
    await admin_conn.execute("SELECT pg_advisory_unlock(7261)")
    conns = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        assert all([await c.fetchval("SHOW work_mem") != "64kB" for c in conns])
    finally:
        for c in conns:
            await pool.release(c)


async def test_function_refuses_a_read_write_transaction(admin_conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await admin_conn.fetchval("SELECT ragkeeper_sql.run_readonly_query('SELECT 1', 10, 1000)")


async def test_function_is_not_executable_by_public(admin_conn: asyncpg.Connection) -> None:
    grantees = await admin_conn.fetch(
        "SELECT a.grantee::regrole::text AS who FROM pg_proc, aclexplode(proacl) a "
        "WHERE proname = 'run_readonly_query' AND a.privilege_type = 'EXECUTE'"
    )
    reader = await _reader(admin_conn)
    agent = await admin_conn.fetchval("SELECT ragkeeper_admin.role_name('agent')")
    # not PUBLIC (0): the owner, the migrating role and the agent's duty role
    assert {r["who"] for r in grantees} == {reader, "postgres", agent}
    owner = await admin_conn.fetchval(
        "SELECT proowner::regrole::text FROM pg_proc WHERE proname = 'run_readonly_query'"
    )
    assert owner == reader
    assert await admin_conn.fetchval(
        "SELECT NOT rolcanlogin AND NOT rolsuper FROM pg_roles WHERE rolname = $1", reader
    )
