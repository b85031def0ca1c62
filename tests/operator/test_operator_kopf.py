"""End-to-end: the real kopf runtime with the operator's handlers against an API emulator.

The emulator speaks HTTP on 127.0.0.1; the tests act as the user (creating and
editing DataSources, Secrets, PVCs) and as the CronJob/Job controllers and the
kubelet (creating finished Pods, marking Jobs complete), then wait on the
conditions the operator should bring about.
"""

from __future__ import annotations

import json
from typing import Any

import kmock
import kubernetes_validate

from ragkeeper_operator import builders
from ragkeeper_operator.reconcile import Runtime
from tests.operator.conftest import NAMESPACE
from tests.operator.harness import DS, Cluster, eventually

K8S_VERSION = "1.37.0"
GRANTED = {"ragkeeper.dev/credentials": "true"}


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


async def ready_datasource(k8s: Cluster, **spec: Any) -> dict[str, Any]:
    """Secrets and PVC in place, a local DataSource created and Ready."""
    await prepare(k8s)
    await k8s.create_datasource(local_datasource(**spec))
    return await eventually(ready(k8s, "team-docs"))  # type: ignore[no-any-return]


def scheduled_job(k8s: Cluster, name: str, job_name: str) -> dict[str, Any]:
    """The Job the CronJob controller would create from the CronJob's template."""
    template = cronjob(k8s, name)["spec"]["jobTemplate"]  # type: ignore[index]
    return {"metadata": {"name": job_name, "namespace": NAMESPACE}, "spec": template["spec"]}


def env_of(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    job = spec["jobTemplate"]["spec"] if "jobTemplate" in spec else spec
    template = job["template"]
    container = template["spec"]["containers"][0]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


async def mirrored_schedule(k8s: Cluster, when: str, name: str = "team-docs") -> None:
    """Play the CronJob controller (``lastScheduleTime``) and wait until it is mirrored.

    kopf handles one CronJob's events in order, so once this one is handled, every
    earlier event of that CronJob (e.g. one the operator's own patch caused) was too.
    """
    await k8s.call(
        "PATCH",
        f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs/{builders.cronjob_name(name)}/status",
        {"status": {"lastScheduleTime": when}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    await eventually(
        lambda: (
            (k8s.obj(DS, NAMESPACE, name) or {}).get("status", {}).get("lastScheduleTime") == when
        )
    )


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
    # One Event for the new DataSource: its Ready transition says the CronJob runs.
    await eventually(lambda: "CronJobReady" in event_reasons(k8s, "team-docs"))
    assert "CronJobCreated" not in event_reasons(k8s, "team-docs")


async def test_spec_change_patches_the_cronjob(k8s: Cluster, operator: Runtime) -> None:
    await ready_datasource(k8s)
    first_uid = cronjob(k8s, "team-docs")["metadata"]["uid"]  # type: ignore[index]

    await k8s.patch_datasource(
        NAMESPACE, "team-docs", {"spec": {"schedule": "0 3 * * *", "timeZone": "Europe/Berlin"}}
    )

    patched = await eventually(
        lambda: (cj := cronjob(k8s, "team-docs")) and cj["spec"]["schedule"] == "0 3 * * *" and cj
    )
    assert patched["spec"]["timeZone"] == "Europe/Berlin"
    assert patched["metadata"]["uid"] == first_uid, "patched in place, not re-created"
    body = await eventually(
        lambda: (
            (b := k8s.obj(DS, NAMESPACE, "team-docs"))
            and b["status"].get("observedGeneration") == 2
            and b
        )
    )
    assert condition(body, "Ready")["status"] == "True"  # type: ignore[index]
    await eventually(lambda: "CronJobUpdated" in event_reasons(k8s, "team-docs"))


async def test_suspend_is_honoured(k8s: Cluster, operator: Runtime) -> None:
    await prepare(k8s)
    await k8s.create_datasource(local_datasource(suspend=True))

    body = await eventually(ready(k8s, "team-docs", "True", "Suspended"))
    assert cronjob(k8s, "team-docs")["spec"]["suspend"] is True  # type: ignore[index]
    assert "suspended" in condition(body, "Ready")["message"]  # type: ignore[index]

    await k8s.patch_datasource(NAMESPACE, "team-docs", {"spec": {"suspend": False}})
    await eventually(ready(k8s, "team-docs", "True", "CronJobReady"))
    assert cronjob(k8s, "team-docs")["spec"]["suspend"] is False  # type: ignore[index]


async def test_invalid_spec_sets_condition_and_operator_keeps_working(
    k8s: Cluster, operator: Runtime
) -> None:
    await prepare(k8s)
    await k8s.create_datasource(local_datasource("broken", schedule="61 * * * *"))
    await k8s.create_datasource(local_datasource("unknown", colour="blue"))

    broken = await eventually(ready(k8s, "broken", "False", "InvalidSchedule"))
    assert "61 * * * *" in condition(broken, "Ready")["message"]  # type: ignore[index]
    await eventually(ready(k8s, "unknown", "False", "UnknownFields"))
    await eventually(lambda: "InvalidSchedule" in event_reasons(k8s, "broken"))
    warnings = [e for e in k8s.events("broken") if e["reason"] == "InvalidSchedule"]
    assert warnings[0]["type"] == "Warning"
    assert cronjob(k8s, "broken") is None

    await k8s.create_datasource(local_datasource("healthy"))
    await eventually(ready(k8s, "healthy", "True"))

    await k8s.patch_datasource(NAMESPACE, "broken", {"spec": {"schedule": "@hourly"}})
    await eventually(ready(k8s, "broken", "True"))
    assert cronjob(k8s, "broken")["spec"]["schedule"] == "@hourly"  # type: ignore[index]
    invalid = operator.metrics.reconciliations.labels(result="invalid")
    await eventually(lambda: invalid._value.get() >= 2)


async def test_missing_secret_heals_when_created(k8s: Cluster, operator: Runtime) -> None:
    await k8s.create_pvc(NAMESPACE, "docs")
    await k8s.create_datasource(local_datasource())

    await eventually(ready(k8s, "team-docs", "False", "SecretNotFound"))
    assert cronjob(k8s, "team-docs") is None

    await k8s.create_secret(NAMESPACE, "ragkeeper-database", ["DATABASE_URL"])

    await eventually(ready(k8s, "team-docs", "True"))
    assert cronjob(k8s, "team-docs") is not None
    await eventually(lambda: event_reasons(k8s, "team-docs") >= {"SecretNotFound", "CronJobReady"})


async def test_missing_claim_and_credentials_key_are_reported(
    k8s: Cluster, operator: Runtime
) -> None:
    await k8s.create_secret(NAMESPACE, "ragkeeper-database", ["DATABASE_URL"])
    await k8s.create_secret(NAMESPACE, "drive", ["token.json"], GRANTED)
    await k8s.create_datasource(local_datasource())
    await k8s.create_datasource(drive_datasource())

    local = await eventually(ready(k8s, "team-docs", "False", "VolumeClaimNotFound"))
    drive = await eventually(ready(k8s, "handbook", "False", "SecretKeyNotFound"))
    assert "docs" in condition(local, "Ready")["message"]  # type: ignore[index]
    assert "credentials.json" in condition(drive, "Ready")["message"]  # type: ignore[index]

    await k8s.create_pvc(NAMESPACE, "docs")
    await eventually(ready(k8s, "team-docs", "True"))


async def test_finished_pods_become_last_run_and_conditions(
    k8s: Cluster, operator: Runtime
) -> None:
    await ready_datasource(k8s)
    job = scheduled_job(k8s, "team-docs", "ragkeeper-team-docs-29000000")

    logs = '{"level": "info", "message": "done"}\n' + stats(files_failed=2, status="partial")
    await k8s.finish_pod(
        job,
        exit_code=0,
        message=logs,
        started_at="2026-01-01T09:58:30Z",
        finished_at="2026-01-01T10:00:00Z",
    )

    def run_recorded() -> dict[str, Any] | None:
        body = k8s.obj(DS, NAMESPACE, "team-docs")
        cond = condition(body, "LastRunSucceeded")
        return body if cond and cond["reason"] == "CompletedWithErrors" else None

    body = await eventually(run_recorded)
    last_run = body["status"]["lastRun"]
    assert (last_run["files_added"], last_run["documents_total"]) == (3, 12)
    assert last_run["job_name"] == "ragkeeper-team-docs-29000000"
    assert body["status"]["lastSuccessfulTime"] == "2026-01-01T10:00:00Z"
    assert condition(body, "LastRunSucceeded")["status"] == "True"  # type: ignore[index]
    labels = {"namespace": NAMESPACE, "datasource": "team-docs"}
    # The fake API server holds the new status before the operator's patch call returns and
    # the gauges are set: wait for them rather than read them in that gap.
    documents = operator.metrics.documents.labels(**labels)
    await eventually(lambda: documents._value.get() == 12)
    assert operator.metrics.files_failed.labels(**labels)._value.get() == 2
    # The run's container ran 90 s: one observation under its reason, in the 120 s bucket.
    text = operator.metrics.render().decode()
    assert 'ragkeeper_operator_run_duration_seconds_sum{reason="CompletedWithErrors"} 90.0' in text
    assert (
        'ragkeeper_operator_run_duration_seconds_bucket{le="60.0",reason="CompletedWithErrors"} 0.0'
        in text
    )
    assert (
        'ragkeeper_operator_run_duration_seconds_bucket{le="120.0",reason="CompletedWithErrors"} 1.0'
        in text
    )

    await k8s.finish_pod(
        job,
        exit_code=3,
        message=stats(status="failed", errors=[{"file": "", "error": "invalid_grant"}]),
        finished_at="2026-01-01T11:00:00Z",
    )

    def failed() -> dict[str, Any] | None:
        body = k8s.obj(DS, NAMESPACE, "team-docs")
        cond = condition(body, "LastRunSucceeded")
        return body if cond and cond["status"] == "False" else None

    body = await eventually(failed)
    cond = condition(body, "LastRunSucceeded")
    assert cond["reason"] == "CredentialsInvalid"  # type: ignore[index]
    assert "invalid_grant" in cond["message"]  # type: ignore[index]
    assert body["status"]["lastSuccessfulTime"] == "2026-01-01T10:00:00Z"
    assert body["status"]["lastRun"]["exit_code"] == 3
    await eventually(lambda: "CredentialsInvalid" in event_reasons(k8s, "team-docs"))


async def test_crashed_pod_without_stats_is_a_failed_run(k8s: Cluster, operator: Runtime) -> None:
    await ready_datasource(k8s)
    job = scheduled_job(k8s, "team-docs", "ragkeeper-team-docs-1")

    await k8s.finish_pod(job, exit_code=2, message="Traceback ...\nConfigurationError: bad model")

    def failed() -> dict[str, Any] | None:
        body = k8s.obj(DS, NAMESPACE, "team-docs")
        cond = condition(body, "LastRunSucceeded")
        return body if cond and cond["reason"] == "ConfigurationInvalid" else None

    body = await eventually(failed)
    assert body["status"]["lastRun"]["status"] == "failed"
    assert "bad model" in body["status"]["lastRun"]["message"]
    assert "lastSuccessfulTime" not in body["status"]


async def test_sync_annotation_creates_one_job_per_value(k8s: Cluster, operator: Runtime) -> None:
    await ready_datasource(k8s)
    key = builders.SYNC_REQUEST_ANNOTATION

    await k8s.patch_datasource(
        NAMESPACE, "team-docs", {"metadata": {"annotations": {key: "2026-01-01T12:00:00Z"}}}
    )
    jobs = await eventually(lambda: k8s.all("batch/v1/jobs", NAMESPACE))
    assert len(jobs) == 1
    job = jobs[0]
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert env_of(job)["RUN_MODE"] == "single"
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    await eventually(
        lambda: (k8s.obj(DS, NAMESPACE, "team-docs") or {}).get("status", {}).get("lastSyncRequest")
    )

    # Touching something else (or re-applying the same value) starts nothing new.
    await k8s.patch_datasource(
        NAMESPACE, "team-docs", {"metadata": {"annotations": {"team": "search"}}}
    )
    await k8s.patch_datasource(
        NAMESPACE, "team-docs", {"metadata": {"annotations": {key: "2026-01-01T13:00:00Z"}}}
    )
    await eventually(lambda: len(k8s.all("batch/v1/jobs", NAMESPACE)) == 2)
    names = {j["metadata"]["name"] for j in k8s.all("batch/v1/jobs", NAMESPACE)}
    assert len(names) == 2
    await eventually(lambda: "SyncStarted" in event_reasons(k8s, "team-docs"))


async def test_delete_with_delete_policy_purges_then_releases(
    k8s: Cluster, operator: Runtime
) -> None:
    await prepare(k8s)
    created = await k8s.create_datasource(local_datasource())
    await eventually(ready(k8s, "team-docs"))
    await eventually(
        lambda: (
            "ragkeeper.dev/purge"
            in (
                (k8s.obj(DS, NAMESPACE, "team-docs") or {}).get("metadata", {}).get("finalizers")
                or []
            )
        )
    )

    await k8s.delete_datasource(NAMESPACE, "team-docs")

    purge = await eventually(
        lambda: [j for j in k8s.all("batch/v1/jobs", NAMESPACE) if "purge" in j["metadata"]["name"]]
    )
    job = purge[0]
    env = env_of(job)
    assert env["RUN_MODE"] == "purge"
    assert env["RAG_PIPELINE_ID"] == f"{NAMESPACE}/team-docs"
    assert "ownerReferences" not in job["metadata"]
    assert (
        job["metadata"]["annotations"]["ragkeeper.dev/datasource-uid"] == created["metadata"]["uid"]
    )
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    assert cronjob(k8s, "team-docs")["spec"]["suspend"] is True  # type: ignore[index]
    still_there = k8s.obj(DS, NAMESPACE, "team-docs")
    assert still_there is not None and still_there["metadata"].get("deletionTimestamp")

    await k8s.complete_job(NAMESPACE, job["metadata"]["name"])

    await eventually(lambda: k8s.obj(DS, NAMESPACE, "team-docs") is None)
    await eventually(lambda: "Purged" in event_reasons(k8s, "team-docs"))


async def test_delete_with_retain_policy_skips_the_purge(k8s: Cluster, operator: Runtime) -> None:
    await prepare(k8s)
    await k8s.create_datasource(local_datasource(deletionPolicy="Retain"))
    await eventually(ready(k8s, "team-docs"))
    body = k8s.obj(DS, NAMESPACE, "team-docs")
    assert "ragkeeper.dev/purge" not in (body["metadata"].get("finalizers") or [])  # type: ignore[index]

    await k8s.delete_datasource(NAMESPACE, "team-docs")

    await eventually(lambda: k8s.obj(DS, NAMESPACE, "team-docs") is None)
    assert k8s.all("batch/v1/jobs", NAMESPACE) == []


async def test_cronjob_schedule_is_mirrored_and_deleted_cronjob_recreated(
    k8s: Cluster, operator: Runtime
) -> None:
    await ready_datasource(k8s)
    name = builders.cronjob_name("team-docs")

    await mirrored_schedule(k8s, "2026-01-01T09:45:00Z")

    await k8s.call("DELETE", f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs/{name}")
    await eventually(lambda: cronjob(k8s, "team-docs") is not None)
    # Ready stayed True, so the Event names what was done: the CronJob was created again.
    await eventually(lambda: "CronJobCreated" in event_reasons(k8s, "team-docs"))


async def test_only_watched_namespaces_are_served(k8s: Cluster) -> None:
    from tests.operator.conftest import fast_settings, operator_within_rbac

    k8s.api.namespaces = (NAMESPACE, "elsewhere")
    await prepare(k8s)
    await k8s.create_secret("elsewhere", "ragkeeper-database", ["DATABASE_URL"])
    await k8s.create_pvc("elsewhere", "docs")
    other = local_datasource("other")
    other["metadata"]["namespace"] = "elsewhere"

    settings = fast_settings(k8s.kubeconfig, watch_namespaces=(NAMESPACE,))
    async with operator_within_rbac(k8s, settings):
        await k8s.create_datasource(other)
        await k8s.create_datasource(local_datasource())
        await eventually(ready(k8s, "team-docs"))
        # The other namespace's DataSource was created first and is still untouched.
        assert k8s.obj(DS, "elsewhere", "other").get("status") is None  # type: ignore[union-attr]
        assert k8s.all("batch/v1/cronjobs", "elsewhere") == []


def cronjob_patches(k8s: Cluster, name: str) -> int:
    """PATCH requests to the CronJob itself (not its status) the emulator has served."""
    resource = kmock.resource("batch/v1/cronjobs")
    return sum(
        1
        for request in k8s.api
        if request.method == kmock.method.PATCH
        and request.resource == resource
        and request.name == name
        and request.subresource is None
    )


async def test_hand_edited_cronjob_is_repaired_once(k8s: Cluster, operator: Runtime) -> None:
    await ready_datasource(k8s)
    name = builders.cronjob_name("team-docs")
    path = f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs/{name}"
    original = cronjob(k8s, "team-docs")
    assert original is not None
    assert cronjob_patches(k8s, name) == 0

    container = "/spec/jobTemplate/spec/template/spec/containers/0"
    await k8s.call(
        "PATCH",
        path,
        [
            {"op": "replace", "path": "/spec/schedule", "value": "* * * * *"},
            {"op": "replace", "path": f"{container}/image", "value": "evil/image:latest"},
        ],
        headers={"Content-Type": "application/json-patch+json"},
    )

    def restored() -> dict[str, Any] | None:
        cj = cronjob(k8s, "team-docs")
        return cj if cj and cj["spec"] == original["spec"] else None

    repaired = await eventually(restored)
    assert repaired["metadata"]["uid"] == original["metadata"]["uid"], "patched, not re-created"
    events = await eventually(
        lambda: [e for e in k8s.events("team-docs") if e["reason"] == "CronJobDriftRepaired"]
    )
    assert events[0]["type"] == "Normal"
    assert "spec.schedule" in events[0]["message"]
    assert "image" in events[0]["message"]
    assert events[0]["involvedObject"]["kind"] == "DataSource"
    assert cronjob_patches(k8s, name) == 2, "the hand edit and one repair"

    # A later CronJob event: once it is handled, the repair's own event was handled too.
    await mirrored_schedule(k8s, "2026-01-01T09:45:00Z")
    assert cronjob_patches(k8s, name) == 2, "no-diff events patch nothing"
    assert len([e for e in k8s.events("team-docs") if e["reason"] == "CronJobDriftRepaired"]) == 1


async def test_purge_suspension_is_not_undone_as_drift(k8s: Cluster, operator: Runtime) -> None:
    await ready_datasource(k8s)

    await k8s.delete_datasource(NAMESPACE, "team-docs")
    await eventually(lambda: k8s.all("batch/v1/jobs", NAMESPACE))
    assert cronjob(k8s, "team-docs")["spec"]["suspend"] is True  # type: ignore[index]

    # A later CronJob event, handled after the one the suspension caused.
    await mirrored_schedule(k8s, "2026-01-01T09:45:00Z")
    assert cronjob(k8s, "team-docs")["spec"]["suspend"] is True  # type: ignore[index]
    assert "CronJobDriftRepaired" not in event_reasons(k8s, "team-docs")
