"""End-to-end: the real kopf runtime with the operator's handlers against an API emulator.

The emulator speaks HTTP on 127.0.0.1; the tests act as the user (creating and
editing DataSources, Secrets, PVCs) and as the CronJob/Job controllers and the
kubelet (creating finished Pods, marking Jobs complete), then wait on the
conditions the operator should bring about.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate

from ragkeeper_operator import builders
from ragkeeper_operator.reconcile import Runtime
from tests.operator.conftest import NAMESPACE
from tests.operator.harness import DS, Cluster, eventually

K8S_VERSION = "1.37.0"


def local_datasource(name: str = "team-docs", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "ragkeeper.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "type": "local",
            "schedule": "*/15 * * * *",
            "local": {"path": "/data", "volume": {"persistentVolumeClaim": {"claimName": "docs"}}},
        },
    }
    body["spec"].update(spec)
    return body


def drive_datasource(name: str = "handbook") -> dict[str, Any]:
    return {
        "apiVersion": "ragkeeper.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "type": "googleDrive",
            "schedule": "0 * * * *",
            "googleDrive": {
                "folderId": "1AbCdEf",
                "credentialsSecretRef": {"name": "drive", "key": "credentials.json"},
            },
        },
    }


def stats(**overrides: Any) -> str:
    value: dict[str, Any] = {
        "pipeline_id": f"{NAMESPACE}/team-docs",
        "pipeline_type": "local",
        "run_mode": "single",
        "status": "success",
        "files_seen": 12,
        "files_added": 3,
        "files_updated": 1,
        "files_deleted": 0,
        "files_unchanged": 8,
        "files_failed": 0,
        "chunks_embedded": 40,
        "chunks_reused": 200,
        "errors": [],
        "duration": 4.2,
        "documents_total": 12,
    }
    value.update(overrides)
    return json.dumps(value)


def condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in ((body or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return item  # type: ignore[no-any-return]
    return None


def ready(k8s: Cluster, name: str, status: str = "True", reason: str | None = None) -> Any:
    def probe() -> dict[str, Any] | None:
        body = k8s.obj(DS, NAMESPACE, name)
        cond = condition(body, "Ready")
        if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
            return body
        return None

    return probe


def event_reasons(k8s: Cluster, name: str) -> set[str]:
    return {event["reason"] for event in k8s.events(name)}


async def prepare(k8s: Cluster) -> None:
    await k8s.create_secret(NAMESPACE, "ragkeeper-database", ["DATABASE_URL"])
    await k8s.create_pvc(NAMESPACE, "docs")


def cronjob(k8s: Cluster, name: str) -> dict[str, Any] | None:
    return k8s.obj("batch/v1/cronjobs", NAMESPACE, builders.cronjob_name(name))


def env_of(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    job = spec["jobTemplate"]["spec"] if "jobTemplate" in spec else spec
    template = job["template"]
    container = template["spec"]["containers"][0]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


async def test_create_makes_one_owned_cronjob(k8s: Cluster, operator: Runtime) -> None:
    await prepare(k8s)
    created = await k8s.create_datasource(local_datasource())

    body = await eventually(ready(k8s, "team-docs", "True", "CronJobReady"))
    made = cronjob(k8s, "team-docs")
    assert made is not None
    owner = made["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "DataSource",
        created["metadata"]["uid"],
        True,
    )
    assert made["spec"]["concurrencyPolicy"] == "Forbid"
    env = env_of(made)
    assert env["RUN_MODE"] == "single"
    assert env["RAG_PIPELINE_ID"] == f"{NAMESPACE}/team-docs"
    assert env["DATABASE_URL"] == {
        "secretKeyRef": {"name": "ragkeeper-database", "key": "DATABASE_URL"}
    }
    kubernetes_validate.validate(made, K8S_VERSION, strict=True)
    assert body["status"]["cronJobName"] == builders.cronjob_name("team-docs")
    assert body["status"]["observedGeneration"] == 1
    assert len(k8s.all("batch/v1/cronjobs", NAMESPACE)) == 1
    await eventually(lambda: event_reasons(k8s, "team-docs") >= {"CronJobCreated", "CronJobReady"})
