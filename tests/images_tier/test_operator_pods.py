"""The operator image against the API emulator, and the Job pods it specifies run for real.

The chart's operator Deployment pod template runs unchanged through ``podrunner`` (plus a
kubeconfig Secret volume pointing at the emulator on 127.0.0.1, since there is no service
account). The test plays the CronJob and Job controllers and the kubelet as
tests/operator/test_operator_kopf.py does, except that each Job's pod template really runs in
the rag image: the Pod status it writes carries the container's real exit code and
termination message. This pins the contract between the operator's pod spec and the image:
env names, the Secret mount path, the termination-log path and the user.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from ragkeeper_operator import builders
from tests.chart.tools import named, render
from tests.images_tier.conftest import CHART_SETS, image
from tests.images_tier.podrunner import Finished, Objects, Pod, PodRunner, probe_url, translate
from tests.operator.harness import DS, Cluster, cluster, eventually
from tests.operator.test_operator_kopf import condition, cronjob, scheduled_job
from tests.support import free_port

pytestmark = pytest.mark.images

NAMESPACE = "docs"
KUBECONFIG_DIR = "/var/run/ragkeeper-test"
EXAMPLES = 7


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


async def create_secret(
    k8s: Cluster, name: str, data: dict[str, str], labels: dict[str, str] | None = None
) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels or {}},
        "data": {key: b64(value) for key, value in data.items()},
    }
    await k8s.create(f"/api/v1/namespaces/{NAMESPACE}/secrets", body)


def emulator_objects(k8s: Cluster, claims: dict[str, Path]) -> Objects:
    """The emulator's Secrets and ConfigMaps, as the kubelet would read them."""
    manifests = [{"kind": "Secret", **item} for item in k8s.all("v1/secrets", NAMESPACE)] + [
        {"kind": "ConfigMap", **item} for item in k8s.all("v1/configmaps", NAMESPACE)
    ]
    return Objects.from_manifests(manifests, claims)


class Operator:
    """The operator container, its liveness URL, and a scratch folder for the pods it asks for."""

    def __init__(self, podman: PodRunner, name: str, health: str, workdir: Path) -> None:
        self.podman = podman
        self.name = name
        self.health = health
        self.workdir = workdir


@pytest.fixture
async def k8s(shared_dir: Path) -> AsyncIterator[Cluster]:
    async with cluster(shared_dir) as api:
        yield api


@pytest.fixture
async def operator(
    podman: PodRunner, k8s: Cluster, shared_dir: Path, database_url: str
) -> AsyncIterator[Operator]:
    """The chart's operator pod (default values) running against the emulator."""
    rendered = render(sets=CHART_SETS)
    deployment = named(rendered, "Deployment", "-operator")
    spec = json.loads(json.dumps(deployment["spec"]["template"]["spec"]))
    container = spec["containers"][0]
    # No service account here: a kubeconfig Secret volume and KUBECONFIG point at the emulator.
    spec["volumes"].append({"name": "kubeconfig", "secret": {"secretName": "kubeconfig"}})
    container["volumeMounts"].append(
        {"name": "kubeconfig", "mountPath": KUBECONFIG_DIR, "readOnly": True}
    )
    container["env"].append({"name": "KUBECONFIG", "value": f"{KUBECONFIG_DIR}/config"})
    objects = Objects.from_manifests(rendered)
    objects.add_secret("kubeconfig", {"config": k8s.kubeconfig.read_text()})
    health, metrics = free_port(), free_port()
    run = translate(
        spec,
        Pod("ragkeeper-operator-0", "ragkeeper", shared_dir / "operator"),
        objects,
        env_overrides={
            "HEALTH_PORT": str(health),
            "METRICS_PORT": str(metrics),
            # Short retry delays, so a healing step is observable within the test.
            "RETRY_INITIAL_DELAY_SECONDS": "0.5",
            "RETRY_MAX_DELAY_SECONDS": "2",
            "PURGE_POLL_SECONDS": "0.5",
        },
    )
    assert run.image == image("operator")
    assert run.env["RAG_IMAGE"] == image("rag"), "the operator runs the rag image built here"
    await asyncio.to_thread(podman.start, run)
    running = Operator(
        podman, run.name, probe_url(run, "livenessProbe", {8080: health}), shared_dir / "pods"
    )
    try:
        await eventually(lambda: _healthy(running), timeout=90)
        # The jobs' DSN, under the key the chart gives the operator (the ingestion login's).
        await create_secret(k8s, "ragkeeper-database", {"INGEST_DATABASE_URL": database_url})
        yield running
    finally:
        logs = await asyncio.to_thread(podman.logs, run.name)
        code, took = await asyncio.to_thread(podman.stop, run.name, 30)
        await asyncio.to_thread(podman.remove, run.name)
        assert took < 30 and code == 0, f"operator exit {code} after {took:.1f}s\n{logs[-3000:]}"


async def _healthy(operator: Operator) -> bool:
    if not await asyncio.to_thread(operator.podman.running, operator.name):
        logs = await asyncio.to_thread(operator.podman.logs, operator.name)
        raise AssertionError(f"the operator exited:\n{logs[-4000:]}")
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(operator.health, timeout=2)).status_code == 200
    except httpx.HTTPError:
        return False


async def run_job_pod(
    k8s: Cluster, operator: Operator, job: dict[str, Any], claims: dict[str, Path]
) -> tuple[Finished, dict[str, Any]]:
    """Play the Job controller and kubelet: run the Job's pod template, report its Pod."""
    name = f"{job['metadata']['name']}-{uuid.uuid4().hex[:5]}"
    run = translate(
        job["spec"]["template"]["spec"],
        Pod(name, NAMESPACE, operator.workdir / name),
        emulator_objects(k8s, claims),
    )
    assert run.image == image("rag")
    finished = await asyncio.to_thread(operator.podman.run_to_completion, run)
    pod = await k8s.finish_pod(
        job, exit_code=finished.exit_code, message=finished.message, pod_name=name
    )
    return finished, pod


async def create_job(k8s: Cluster, datasource: str) -> dict[str, Any]:
    """Play the CronJob controller: a Job from the CronJob's jobTemplate."""
    made = cronjob(k8s, datasource)
    assert made is not None
    name = f"{made['metadata']['name']}-{int(time.time()) // 60}"
    job = scheduled_job(k8s, datasource, name)
    job["metadata"]["labels"] = made["spec"]["jobTemplate"]["metadata"]["labels"]
    job["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": made["metadata"]["name"],
            "uid": made["metadata"]["uid"],
            "controller": True,
        }
    ]
    return await k8s.create(
        f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", {"apiVersion": "batch/v1", **job}
    )


def ready(k8s: Cluster, name: str, type_: str, status: str) -> Any:
    def probe() -> dict[str, Any] | None:
        body = k8s.obj(DS, NAMESPACE, name)
        cond = condition(body, type_)
        return body if cond and cond["status"] == status else None

    return probe


async def documents(database_url: str, pipeline: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM document_metadata WHERE pipeline_id = $1", pipeline
            )
        )
    finally:
        await conn.close()


async def test_local_datasource_runs_its_job_pod_then_purges_on_delete(
    k8s: Cluster, operator: Operator, docs_copy: Path, database_url: str
) -> None:
    claims = {"docs": docs_copy}
    await k8s.create_pvc(NAMESPACE, "docs")
    await k8s.create_datasource(
        {
            "apiVersion": "ragkeeper.dev/v1alpha1",
            "kind": "DataSource",
            "metadata": {"name": "team-docs", "namespace": NAMESPACE},
            "spec": {
                "type": "local",
                "schedule": "*/15 * * * *",
                "local": {
                    "path": "/data",
                    "volume": {"persistentVolumeClaim": {"claimName": "docs"}},
                },
            },
        }
    )
    await eventually(ready(k8s, "team-docs", "Ready", "True"), timeout=60)

    job = await create_job(k8s, "team-docs")
    finished, _ = await run_job_pod(k8s, operator, job, claims)
    assert finished.exit_code == 0, finished.stderr[-3000:]
    stats = json.loads(finished.message)
    assert (stats["status"], stats["files_added"]) == ("success", EXAMPLES)
    assert stats["pipeline_id"] == f"{NAMESPACE}/team-docs"
    await k8s.complete_job(NAMESPACE, job["metadata"]["name"])

    body = await eventually(ready(k8s, "team-docs", "LastRunSucceeded", "True"), timeout=60)
    assert body["status"]["lastRun"]["files_added"] == EXAMPLES
    assert body["status"]["lastRun"]["exit_code"] == 0
    assert condition(body, "Ready")["status"] == "True"  # type: ignore[index]
    assert await documents(database_url, f"{NAMESPACE}/team-docs") == EXAMPLES

    await k8s.delete_datasource(NAMESPACE, "team-docs")
    purges = await eventually(
        lambda: [
            j for j in k8s.all("batch/v1/jobs", NAMESPACE) if "purge" in j["metadata"]["name"]
        ],
        timeout=60,
    )
    finished, _ = await run_job_pod(k8s, operator, purges[0], claims)
    assert finished.exit_code == 0, finished.stderr[-3000:]
    assert json.loads(finished.message)["run_mode"] == "purge"
    assert await documents(database_url, f"{NAMESPACE}/team-docs") == 0
    await k8s.complete_job(NAMESPACE, purges[0]["metadata"]["name"])
    await eventually(lambda: k8s.obj(DS, NAMESPACE, "team-docs") is None, timeout=60)


async def test_bad_drive_secret_fails_the_run_with_exit_3(k8s: Cluster, operator: Operator) -> None:
    # Granted to DataSources by the label the chart's default policy names.
    granted = {"ragkeeper.dev/credentials": "true"}
    await create_secret(k8s, "drive", {"credentials.json": "this is not a key file"}, granted)
    await k8s.create_datasource(
        {
            "apiVersion": "ragkeeper.dev/v1alpha1",
            "kind": "DataSource",
            "metadata": {"name": "handbook", "namespace": NAMESPACE},
            "spec": {
                "type": "googleDrive",
                "schedule": "0 * * * *",
                "deletionPolicy": "Retain",
                "googleDrive": {
                    "folderId": "1AbCdEf",
                    "credentialsSecretRef": {"name": "drive", "key": "credentials.json"},
                },
            },
        }
    )
    await eventually(ready(k8s, "handbook", "Ready", "True"), timeout=60)

    job = await create_job(k8s, "handbook")
    finished, _ = await run_job_pod(k8s, operator, job, {})
    assert finished.exit_code == 3, finished.stderr[-3000:]
    stats = json.loads(finished.message)
    # The file the Secret volume holds was found and read where the env says it is.
    expected = f"{builders.GOOGLE_MOUNT}/{builders.GOOGLE_FILE}: not valid JSON"
    assert expected in stats["error"], stats
    await k8s.complete_job(NAMESPACE, job["metadata"]["name"], failed=True)

    body = await eventually(ready(k8s, "handbook", "LastRunSucceeded", "False"), timeout=60)
    cond = condition(body, "LastRunSucceeded")
    assert cond["reason"] == "CredentialsInvalid", cond  # type: ignore[index]
    assert "not valid JSON" in cond["message"]  # type: ignore[index]
    assert body["status"]["lastRun"]["exit_code"] == 3
