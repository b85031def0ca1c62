"""Fairness (issue 18, item 4): broken DataSources never hold up healthy ones.

100 healthy DataSources are created right after 10 broken ones: 3 whose PVC is missing,
2 whose Drive credentials Secret is missing (both retried with backoff, per object), and 5
whose Jobs keep failing. The healthy ones must each be handled at their first attempt,
with no retry and no delay recorded by kopf, while the broken ones wait on their own
backoff; once the missing PVC and Secret appear, the waiting ones heal without a restart.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ragkeeper_operator.handlers import PREFIX
from ragkeeper_operator.reconcile import Runtime
from tests.operator.conftest import NAMESPACE, fast_settings, operator_within_rbac
from tests.operator.harness import DS, Cluster, eventually
from tests.operator.test_operator_kopf import (
    condition,
    local_datasource,
    prepare,
    scheduled_job,
    stats,
)

HEALTHY = [f"healthy-{index:03d}" for index in range(100)]
NO_VOLUME = [f"no-volume-{index}" for index in range(3)]
NO_SECRET = [f"no-secret-{index}" for index in range(2)]
FAILING = [f"failing-{index}" for index in range(5)]
# Backoff per object: 0.2 s doubling up to 1.6 s (fast_settings' 0.5 s cap would hide growth).
BACKOFF = {"retry_initial_delay_seconds": 0.2, "retry_max_delay_seconds": 1.6}


def drive_without_secret(name: str) -> dict[str, Any]:
    body = local_datasource(name)
    body["spec"] = {
        "type": "googleDrive",
        "schedule": "0 * * * *",
        "googleDrive": {
            "folderId": "1AbCdEf",
            "credentialsSecretRef": {"name": "drive", "key": "credentials.json"},
        },
    }
    return body


def without_volume(name: str) -> dict[str, Any]:
    body = local_datasource(name)
    body["spec"]["local"]["volume"]["persistentVolumeClaim"]["claimName"] = "archive"
    return body


def ready_state(k8s: Cluster, name: str) -> tuple[str, str] | None:
    cond = condition(k8s.obj(DS, NAMESPACE, name), "Ready")
    return (cond["status"], cond["reason"]) if cond else None


def progress(k8s: Cluster, name: str) -> list[dict[str, Any]]:
    """kopf's progress records on a DataSource (one per handler still retrying)."""
    annotations = (k8s.obj(DS, NAMESPACE, name) or {}).get("metadata", {}).get("annotations", {})
    records = []
    for key, value in annotations.items():
        if key.startswith(f"{PREFIX}/") and value.startswith("{"):
            record = json.loads(value)
            if "retries" in record:
                records.append(record)
    return records


async def create_all(k8s: Cluster) -> None:
    for name in NO_VOLUME:
        await k8s.create_datasource(without_volume(name))
    for name in NO_SECRET:
        await k8s.create_datasource(drive_without_secret(name))
    for name in FAILING + HEALTHY:
        await k8s.create_datasource(local_datasource(name))


async def fail_jobs(k8s: Cluster, name: str, runs: int) -> None:
    """Play the Job controller: ``runs`` Jobs of ``name`` whose Pods exit 1."""
    for run in range(runs):
        job = scheduled_job(k8s, name, f"ragkeeper-{name}-{run}")
        failed = stats(pipeline_id=f"{NAMESPACE}/{name}", status="failed", files_failed=1)
        await k8s.finish_pod(job, exit_code=1, message=failed)


def retries_bounded_by_backoff(record: dict[str, Any], created: float) -> None:
    """Attempts so far fit the doubling delays since creation: backoff, not a hot loop."""
    delayed = datetime.fromisoformat(record["delayed"])
    if delayed.tzinfo is None:  # kopf writes UTC without an offset
        delayed = delayed.replace(tzinfo=UTC)
    elapsed = delayed.timestamp() - created
    delays: list[float] = []
    total = 0.0
    while total <= elapsed + 1:
        delay = min(BACKOFF["retry_max_delay_seconds"], 0.2 * 2 ** len(delays))
        delays.append(delay)
        total += delay
    assert 1 <= record["retries"] <= len(delays), (record, elapsed)


async def test_broken_datasources_do_not_delay_the_healthy_ones(k8s: Cluster) -> None:
    await prepare(k8s)
    settings = fast_settings(k8s.kubeconfig, **BACKOFF)
    async with operator_within_rbac(k8s, settings):
        created = datetime.now(UTC).timestamp()
        await create_all(k8s)
        for name in FAILING:
            await eventually(lambda name=name: ready_state(k8s, name) == ("True", "CronJobReady"))
            await fail_jobs(k8s, name, runs=3)
        await eventually(
            lambda: all(ready_state(k8s, n) == ("True", "CronJobReady") for n in HEALTHY), 60
        )
        await assert_fair(k8s, created)
        await heal(k8s)


async def assert_fair(k8s: Cluster, created: float) -> None:
    # Every healthy one got there at its first attempt: kopf recorded no retry or delay.
    assert [n for n in HEALTHY if progress(k8s, n)] == []
    for name in FAILING:
        await eventually(lambda name=name: last_run_failed(k8s, name))
        assert ready_state(k8s, name) == ("True", "CronJobReady")
    waiting = dict.fromkeys(NO_VOLUME, "VolumeClaimNotFound")
    waiting |= dict.fromkeys(NO_SECRET, "SecretNotFound")
    for name, reason in waiting.items():
        assert ready_state(k8s, name) == ("False", reason)
        assert any(e["reason"] == reason and e["type"] == "Warning" for e in k8s.events(name))
        (record,) = progress(k8s, name)
        retries_bounded_by_backoff(record, created)


def last_run_failed(k8s: Cluster, name: str) -> bool:
    cond = condition(k8s.obj(DS, NAMESPACE, name), "LastRunSucceeded")
    return bool(cond and cond["status"] == "False")


async def heal(k8s: Cluster) -> None:
    """The missing PVC and Secret appear: the waiting DataSources become Ready on their own."""
    await k8s.create_pvc(NAMESPACE, "archive")
    await k8s.create_secret(
        NAMESPACE, "drive", ["credentials.json"], labels={"ragkeeper.dev/credentials": "true"}
    )
    for name in NO_VOLUME + NO_SECRET:
        await eventually(lambda name=name: ready_state(k8s, name) == ("True", "CronJobReady"))
    assert len(k8s.all("batch/v1/cronjobs", NAMESPACE)) == 110


async def test_one_read_of_a_shared_secret_serves_a_burst(k8s: Cluster, operator: Runtime) -> None:
    """20 DataSources created at once read their namespace's Secret and PVC once (lookups.py)."""
    from tests.operator.rbac import operator_calls

    await prepare(k8s)
    start = len(operator_calls(k8s.api.log))
    names = [f"burst-{index:02d}" for index in range(20)]
    for name in names:
        await k8s.create_datasource(local_datasource(name))
    for name in names:
        await eventually(lambda name=name: ready_state(k8s, name) == ("True", "CronJobReady"))
    calls = operator_calls(k8s.api.log)[start:]
    reads = [c for c in calls if c.verb == "get" and c.is_resource]
    by_resource = sorted(c.resource for c in reads)
    assert by_resource == ["persistentvolumeclaims", "secrets"]
