"""``python -m ragkeeper_knowledge.purge_user``: one user's conversations, messages, memories and
request log go, in one transaction; another user's rows and the documents stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import asyncpg

from tests.knowledge.test_roles import migrated_database

USERS = ("purge-alice", "purge-bob")


async def _seed(conn: asyncpg.Connection) -> None:
    for user in USERS:
        session = f"s-{user}"
        await conn.execute(
            "INSERT INTO conversations (session_id, user_id, title) VALUES ($1, $2, 't')",
            session,
            user,
        )
        for role in ("user", "assistant"):
            await conn.execute(
                "INSERT INTO messages (session_id, role, content, message) "
                "VALUES ($1, $2, 'hi', '{}'::jsonb)",
                session,
                role,
            )
        await conn.execute(
            "INSERT INTO attachments (id, session_id, message_id, file_name, mime_type, "
            "size_bytes, sha256) SELECT $1, $2, min(id), 'notes.txt', 'text/plain', 5, 'h' "
            "FROM messages WHERE session_id = $2",
            f"a-{user}",
            session,
        )
        await conn.execute(
            "INSERT INTO memories (user_id, content, embedding, session_id) "
            "VALUES ($1, 'my team is Falcon', '[1,0,0]'::vector, $2)",
            user,
            session,
        )
        await conn.execute("INSERT INTO requests (user_id, route) VALUES ($1, '/api/search')", user)


def _purge(dsn: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": dsn}
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "ragkeeper_knowledge.purge_user", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


async def _left(conn: asyncpg.Connection, user: str) -> dict[str, int]:
    from ragkeeper_knowledge.purge_user import COUNT

    return {table: int(await conn.fetchval(sql, user)) for table, sql in COUNT.items()}


async def test_purge_deletes_one_users_rows_and_nothing_else(pg_admin_url: str) -> None:
    urls = await migrated_database(pg_admin_url, "purge")
    conn = await asyncpg.connect(urls["migrator"])
    try:
        await _seed(conn)
        everything = {
            "conversations": 1,
            "messages": 2,
            "attachments": 1,
            "memories": 1,
            "requests": 1,
        }

        code, out, err = _purge(urls["migrator"], "purge-alice", "--dry-run")
        assert code == 0, err
        assert json.loads(out)["deleted"] == everything
        assert await _left(conn, "purge-alice") == everything

        code, out, err = _purge(urls["migrator"], "purge-alice")
        assert code == 0, err
        assert json.loads(out) == {
            "user_id": "purge-alice",
            "dry_run": False,
            "deleted": everything,
        }
        assert await _left(conn, "purge-alice") == dict.fromkeys(everything, 0)
        assert await _left(conn, "purge-bob") == everything
    finally:
        await conn.close()


def test_purge_refuses_without_a_dsn_or_a_user() -> None:
    code, _, err = _purge("", "purge-alice")
    assert code == 2 and "DATABASE_URL is not set" in err
    code, _, err = _purge("postgresql://unused", " ")
    assert code == 2 and "empty" in err
