"""Delete what ragkeeper keeps about one user: ``python -m ragkeeper_knowledge.purge_user SUB``.

A user's conversations (their messages and attached files go with them), long-term memories
and the rate limiter's request log, in one transaction; the documents are shared and stay.
``SUB`` is the user id the agent stores: the token's ``sub`` claim. Run it with the
migrator's DSN in ``DATABASE_URL``, as the migration Job does: the agent's own login may not
delete conversations. Prints the rows deleted per table as JSON; ``--dry-run`` counts them
and deletes nothing. Exit codes: 0 done, 2 bad arguments or no ``DATABASE_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import asyncpg

# What each table holds of the user; messages and attachments are counted through their
# conversations and deleted with them (ON DELETE CASCADE).
COUNT = {
    "conversations": "SELECT count(*) FROM conversations WHERE user_id = $1",
    "messages": "SELECT count(*) FROM messages m JOIN conversations c USING (session_id) "
    "WHERE c.user_id = $1",
    "attachments": "SELECT count(*) FROM attachments a JOIN conversations c USING (session_id) "
    "WHERE c.user_id = $1",
    "memories": "SELECT count(*) FROM memories WHERE user_id = $1",
    "requests": "SELECT count(*) FROM requests WHERE user_id = $1",
}
DELETE = (
    "DELETE FROM memories WHERE user_id = $1",
    "DELETE FROM requests WHERE user_id = $1",
    "DELETE FROM conversations WHERE user_id = $1",
)


async def purge_user(
    conn: asyncpg.Connection, user_id: str, *, dry_run: bool = False
) -> dict[str, int]:
    """Rows of ``user_id`` per table, deleted in one transaction unless ``dry_run``."""
    async with conn.transaction():
        counts = {table: int(await conn.fetchval(sql, user_id)) for table, sql in COUNT.items()}
        if not dry_run:
            for statement in DELETE:
                await conn.execute(statement, user_id)
    return counts


async def _run(dsn: str, user_id: str, dry_run: bool) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return await purge_user(conn, user_id, dry_run=dry_run)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ragkeeper_knowledge.purge_user")
    parser.add_argument("user_id", help="the user id (the token's sub) whose data to delete")
    parser.add_argument("--dry-run", action="store_true", help="count the rows, delete nothing")
    args = parser.parse_args(argv)
    dsn = os.environ.get("DATABASE_URL", "")
    if not dsn:
        sys.stderr.write("DATABASE_URL is not set: give the migrator's DSN\n")
        return 2
    if not args.user_id.strip():
        sys.stderr.write("the user id is empty\n")
        return 2
    counts = asyncio.run(_run(dsn, args.user_id, args.dry_run))
    report = {"user_id": args.user_id, "dry_run": args.dry_run, "deleted": counts}
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
