"""Read-only SQL over tabular rows, enforced by Postgres rather than by string matching.

The query a model writes runs through ``ragkeeper_sql.run_readonly_query`` (migration
0003), a ``SECURITY DEFINER`` function owned by this database's NOLOGIN reader role
(``<database>_sqlreader``). Layers, each sufficient against a different attack:

* **privileges** — inside the function the current user is the reader, which may
  SELECT ``document_rows`` and ``tabular_datasets`` and nothing else; it is no
  superuser and holds no ``pg_read_server_files``/``pg_execute_server_program``;
* **no way back** — Postgres refuses ``SET ROLE``, ``set_config('role', …)`` and
  ``session_authorization`` inside security-definer functions (a plain
  ``SET LOCAL ROLE`` could be undone by the query itself);
* **one SELECT** — the text is wrapped as a subquery and opened as a cursor, so
  multi-statement strings, ``COPY``, DDL and data-modifying CTEs do not parse or plan;
* **bytes** — the function adds up each row's JSON size and fails with
  ``program_limit_exceeded`` past ``MAX_RESULT_BYTES``, so the agent never receives
  (or parses) more than that, whatever the query makes Postgres compute;
* **read-only transaction** with ``statement_timeout``, always rolled back, so even
  session-level ``set_config`` calls made by the query do not outlive it; asyncpg's
  pool reset releases advisory locks and resets settings on release.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg

from .errors import SQLRejected, SQLToolError

logger = logging.getLogger(__name__)

MAX_RESULT_CHARS = 20_000
# The most JSON text one query may return to the agent (checked inside the database function).
MAX_RESULT_BYTES = 256 * 1024


class _Rollback(Exception):
    """Raised to leave the transaction block with a rollback."""


class ReadOnlySQL:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        timeout_ms: int,
        max_rows: int,
        max_bytes: int = MAX_RESULT_BYTES,
    ) -> None:
        self._pool = pool
        self._timeout_ms = timeout_ms
        self._max_rows = max_rows
        self._max_bytes = max_bytes

    async def query(self, sql: str) -> list[dict[str, Any]]:
        """Run one SELECT as the restricted reader; rows as JSON objects."""
        result: Any = None
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction(readonly=True):
                    await conn.execute(f"SET LOCAL statement_timeout = {self._timeout_ms:d}")
                    result = await conn.fetchval(
                        "SELECT ragkeeper_sql.run_readonly_query($1, $2, $3)::text",
                        sql,
                        self._max_rows,
                        self._max_bytes,
                        timeout=self._timeout_ms / 1000 + 5,
                    )
                    raise _Rollback
            except _Rollback:
                pass
            except asyncpg.ProgramLimitExceededError as exc:
                raise SQLRejected(
                    f"result too large: over {self._max_bytes} bytes; select fewer rows or "
                    "columns, or aggregate"
                ) from exc
            except asyncpg.QueryCanceledError as exc:
                raise SQLRejected(
                    f"query cancelled after {self._timeout_ms} ms (statement timeout)"
                ) from exc
            except asyncpg.PostgresError as exc:
                raise SQLRejected(f"{type(exc).__name__}: {exc}") from exc
            except TimeoutError as exc:
                raise SQLToolError("query timed out") from exc
        rows = json.loads(result) if isinstance(result, str) else result
        if not isinstance(rows, list):
            raise SQLToolError("unexpected result shape")
        return rows


def render_rows(rows: list[dict[str, Any]], max_chars: int = MAX_RESULT_CHARS) -> str:
    """Rows as compact JSON lines for the model, cut at ``max_chars``."""
    out: list[str] = []
    used = 0
    for i, row in enumerate(rows):
        line = json.dumps(row, ensure_ascii=False, default=str)
        if used + len(line) > max_chars:
            out.append(f"... {len(rows) - i} more row(s) not shown")
            break
        out.append(line)
        used += len(line) + 1
    return "\n".join(out) if out else "(no rows)"
