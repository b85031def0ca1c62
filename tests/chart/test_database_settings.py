"""The bundled database's server settings (database.bundled.postgres) as the chart renders them.

They reach postgres as ``-c name=value`` arguments of its container; the defaults must fit the
container's memory limit, the schema refuses values Postgres would not start with, and the real
server (the embedded PostgreSQL of the test session) accepts every rendered setting.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest
import yaml

from tests.chart.tools import CHART, helm_template, named, render

UNITS = {"kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
K8S_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def _postgres_args(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The ``-c`` settings of the database StatefulSet's postgres container, in order."""
    sts = named(objects, "StatefulSet", "-database")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    args: list[str] = container["args"]
    assert args[0] == "postgres"
    flags, values = args[1::2], args[2::2]
    assert set(flags) == {"-c"} and len(flags) == len(values)
    return dict(v.split("=", 1) for v in values)


def _bytes(value: str, units: dict[str, int]) -> int:
    m = re.fullmatch(r"(\d+)([A-Za-z]+)", value)
    assert m, value
    return int(m[1]) * units[m[2]]


def test_defaults_render_as_postgres_flags() -> None:
    settings = _postgres_args(render())
    assert settings == {
        "shared_buffers": "256MB",
        "effective_cache_size": "768MB",
        "maintenance_work_mem": "256MB",
        "max_parallel_maintenance_workers": "1",
    }


def test_overrides_and_extra_settings_are_rendered() -> None:
    settings = _postgres_args(
        render(
            sets=[
                "database.bundled.postgres.sharedBuffers=2GB",
                "database.bundled.postgres.maxParallelMaintenanceWorkers=3",
                "database.bundled.postgres.extraSettings.work_mem=8MB",
                "database.bundled.postgres.extraSettings.jit=off",
            ]
        )
    )
    assert settings["shared_buffers"] == "2GB"
    assert settings["max_parallel_maintenance_workers"] == "3"
    assert settings["work_mem"] == "8MB" and settings["jit"] == "off"


def test_default_settings_fit_the_memory_limit() -> None:
    """shared_buffers plus one index build's memory stay under 3/4 of the container limit (the
    rest is for connections and the OS page cache); the planner's cache guess under the limit."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())["database"]["bundled"]
    limit = _bytes(values["resources"]["limits"]["memory"], K8S_UNITS)
    pg = values["postgres"]
    resident = _bytes(pg["sharedBuffers"], UNITS) + _bytes(pg["maintenanceWorkMem"], UNITS)
    assert resident <= limit * 3 // 4
    assert _bytes(pg["effectiveCacheSize"], UNITS) <= limit


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("database.bundled.postgres.sharedBuffers=256M", "does not match pattern"),
        ("database.bundled.postgres.maintenanceWorkMem=lots", "does not match pattern"),
        ("database.bundled.postgres.maxParallelMaintenanceWorkers=-1", "minimum"),
        ("database.bundled.postgres.extraSettings.shared_buffers=1GB", "'not' failed"),
    ],
)
def test_schema_refuses_bad_settings(setting: str, message: str) -> None:
    proc = helm_template(sets=[setting])
    assert proc.returncode != 0, f"{setting} was accepted"
    assert message in proc.stderr, proc.stderr


async def test_postgres_accepts_every_rendered_setting(pg_admin_url: str) -> None:
    """ALTER SYSTEM checks name, unit and range as the server's start would (nothing applied:
    each is reset at once)."""
    settings = _postgres_args(render(sets=["database.bundled.postgres.extraSettings.work_mem=8MB"]))
    conn = await asyncpg.connect(pg_admin_url)
    try:
        for name, value in settings.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            await conn.execute(f"ALTER SYSTEM RESET {name}")
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await conn.execute("ALTER SYSTEM SET shared_buffers = '256M'")
    finally:
        await conn.close()
