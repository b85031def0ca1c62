"""Test helpers shared by more than one test package, with no fixtures and no component imports.

:func:`serve_asgi` runs an ASGI app under a real uvicorn server inside the test's own event
loop, on a socket bound to a free port of 127.0.0.1: the agent tests serve ``create_app``
with it, the browser tests serve the agent and their fake Supabase auth API. Binding the socket
before uvicorn starts avoids picking a port and racing another process for it; running in the
test's loop lets tests reach into the app (shutdown requests, pacing) without threads.

:func:`free_port` names a port of 127.0.0.1 that is free now, for a server started as a
separate process (which cannot be handed a bound socket); the benchmarks use it too.

:func:`vector_index_def` reads the definition of the store's HNSW index (knowledge and rag tests).

:func:`shared_tmp_dir` makes a folder other users can reach: pytest's tmp is root's and 0700, so
Postgres (run as another user under root), containers' users and a non-root script could not
even traverse it.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import uvicorn

LOCALHOST = "127.0.0.1"
# How often start-up is checked: uvicorn offers a `started` flag, not an event to wait on.
STARTUP_POLL_SECONDS = 0.01


class ServerStartError(RuntimeError):
    """uvicorn returned before it was serving (its lifespan start-up failed)."""


@asynccontextmanager
async def serve_asgi(app: Any, *, port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` on a free 127.0.0.1 port until the block exits; yields its base URL.

    ``port`` serves on that port instead (the outage tests bring a fake back where it was).

    The lifespan is required (``lifespan="on"``), so a failing start-up raises here instead of
    leaving a server without its pool. On exit the server shuts down gracefully (open streams
    finish or are ended by the app) before the socket is closed.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOCALHOST, port))
    # proxy_headers off, as in ``__main__``: the app resolves the client (TRUSTED_PROXIES).
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", proxy_headers=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise ServerStartError("server exited during start-up")
            await asyncio.sleep(STARTUP_POLL_SECONDS)
        yield f"http://{LOCALHOST}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def free_port() -> int:
    """A port of 127.0.0.1 nobody listens on at the moment (for a server in another process)."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


async def vector_index_def(pool: Any) -> str | None:
    """``pg_indexes.indexdef`` of the store's HNSW index, or None while it is not built."""
    value = await pool.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'documents_embedding_hnsw'"
    )
    return None if value is None else str(value)


@contextmanager
def shared_tmp_dir(prefix: str) -> Iterator[Path]:
    """A new 0755 folder ``/tmp/<prefix>-<random>``, removed with its contents afterwards."""
    path = Path("/tmp") / f"{prefix}-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o755)
    path.chmod(0o755)  # whatever the umask
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
