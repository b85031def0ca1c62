"""The job policy: a DataSource cannot widen the pod it makes the operator run.

No hostPath; an image override, an NFS server or resources above the caps only as the
platform admin's settings allow; Drive credentials only from a Secret carrying the grant
label. Pure checks first, then each refusal through the real kopf runtime against the API
emulator: ``Ready=False`` with its reason, a Warning Event, and no CronJob (or the one made
before suspended, and no sync Job from its template).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ragkeeper_operator import builders, policy
from ragkeeper_operator.reconcile import Runtime
from ragkeeper_operator.settings import OperatorSettings
from ragkeeper_operator.spec import PolicyDenied, parse_spec
from tests.operator.conftest import NAMESPACE, fast_settings, operator_within_rbac
from tests.operator.harness import DS, MERGE, Cluster, eventually
from tests.operator.test_operator_kopf import (
    GRANTED,
    condition,
    cronjob,
    drive_datasource,
    env_of,
    event_reasons,
    local_datasource,
    prepare,
    ready,
)

PVC = {"persistentVolumeClaim": {"claimName": "docs"}}
NFS = {"nfs": {"server": "nfs.example", "path": "/exports/docs"}}
MIRROR = "mirror.example/ragkeeper-rag:2.0.0"


def settings(**overrides: Any) -> OperatorSettings:
    return OperatorSettings(rag_image="registry.example/ragkeeper-rag:1.0.0", **overrides)


def spec(**fields: Any) -> Any:
    raw: dict[str, Any] = {"type": "local", "schedule": "@daily", "local": {"volume": PVC}}
    raw.update(fields)
    return parse_spec(raw)


def denied(parsed: Any, current: OperatorSettings) -> PolicyDenied:
    with pytest.raises(PolicyDenied) as caught:
        policy.check(parsed, current)
    return caught.value


# -- the checks as pure functions ----------------------------------------------------------------


def test_host_path_is_refused_whatever_the_settings() -> None:
    with pytest.raises(PolicyDenied) as caught:
        spec(local={"volume": {"hostPath": {"path": "/"}}})
    assert caught.value.reason == "HostPathNotAllowed"


def test_image_override_needs_the_allow_list() -> None:
    refused = denied(spec(image=MIRROR), settings())
    assert refused.reason == "ImageNotAllowed"
    assert "JOB_ALLOWED_IMAGES" in refused.message
    policy.check(spec(image="registry.example/ragkeeper-rag:1.0.0"), settings())
    policy.check(spec(image=MIRROR), settings(job_allowed_images=(MIRROR,)))
    prefixed = settings(job_allowed_images=("mirror.example/ragkeeper-rag:*",))
    policy.check(spec(image=MIRROR), prefixed)
    assert denied(spec(image="mirror.example/ragkeeper-rag-evil:1"), prefixed).reason == (
        "ImageNotAllowed"
    )
    exact = settings(job_allowed_images=("mirror.example/ragkeeper-rag",))
    assert denied(spec(image=MIRROR), exact).reason == "ImageNotAllowed"


def test_nfs_server_needs_the_allow_list() -> None:
    nfs = spec(local={"volume": NFS})
    refused = denied(nfs, settings())
    assert (refused.reason, "JOB_ALLOWED_NFS_SERVERS" in refused.message) == (
        "NfsServerNotAllowed",
        True,
    )
    assert denied(nfs, settings(job_allowed_nfs_servers=("nfs.other",))).reason == (
        "NfsServerNotAllowed"
    )
    policy.check(nfs, settings(job_allowed_nfs_servers=("NFS.example",)))


@pytest.mark.parametrize(
    ("resources", "reason", "named"),
    [
        ({"limits": {"memory": "2Gi"}}, "ResourcesAboveCap", "JOB_MAX_MEMORY"),
        ({"requests": {"cpu": "1500m"}}, "ResourcesAboveCap", "JOB_MAX_CPU"),
        ({"limits": {"cpu": 4}}, "ResourcesAboveCap", "JOB_MAX_CPU"),
        ({"requests": {"memory": "lots"}}, "InvalidResources", "memory"),
        ({"limits": {"memory": "-1Gi"}}, "InvalidResources", "memory"),
        ({"limits": {"nvidia.com/gpu": 1}}, "InvalidResources", "only cpu and memory"),
        ({"requests": {"memory": "900Mi"}, "limits": {"memory": "512Mi"}}, "InvalidResources", ""),
    ],
)
def test_resources_above_the_caps_or_malformed_are_refused(
    resources: dict[str, Any], reason: str, named: str
) -> None:
    refused = denied(spec(resources=resources), settings())
    assert refused.reason == reason
    assert named in refused.message


def test_resources_within_the_caps_and_the_defaults() -> None:
    current = settings()
    within = spec(resources={"requests": {"cpu": "1", "memory": "1Gi"}})
    policy.check(within, current)
    assert policy.job_resources(spec(), current) == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    # A limit below the default request lowers the request; caps below the defaults lower them.
    small = policy.job_resources(spec(resources={"limits": {"memory": "128Mi"}}), current)
    assert small["requests"]["memory"] == "128Mi"
    low = settings(job_max_cpu="500m", job_max_memory="512Mi")
    assert policy.job_resources(spec(), low)["limits"] == {"cpu": "500m", "memory": "512Mi"}
    policy.check(spec(), low)
    wide = settings(job_max_memory="4Gi")
    policy.check(spec(resources={"limits": {"memory": "2Gi"}}), wide)


def test_settings_read_the_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = {
        "JOB_ALLOWED_IMAGES": "mirror.example/rag:*, other.example/rag:1",
        "JOB_ALLOWED_NFS_SERVERS": "nfs.example,",
        "JOB_MAX_CPU": "2",
        "JOB_MAX_MEMORY": "4Gi",
        "JOB_CREDENTIALS_LABEL": "example.com/drive-ok",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    current = OperatorSettings()
    assert current.job_allowed_images == ("mirror.example/rag:*", "other.example/rag:1")
    assert current.job_allowed_nfs_servers == ("nfs.example",)
    assert (current.job_max_cpu, current.job_max_memory) == ("2", "4Gi")
    assert policy.credentials_granted({"example.com/drive-ok": "true"}, current)
    assert not policy.credentials_granted({"ragkeeper.dev/credentials": "true"}, current)
    monkeypatch.setenv("JOB_MAX_MEMORY", "a lot")
    with pytest.raises(ValueError, match="JOB_MAX_MEMORY"):
        OperatorSettings()


def test_builder_gives_every_job_bounded_limits() -> None:
    body = local_datasource()
    body["metadata"]["uid"] = "0b7b1f7e-6c1c-4f43-9a7e-3d1f5b0e9a11"
    built = builders.build_cronjob(body, parse_spec(body["spec"]), settings())
    pod = built["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}


# -- refusals through the operator ----------------------------------------------------------------


async def refused(k8s: Cluster, name: str, reason: str) -> dict[str, Any]:
    """Ready=False for ``reason``, a Warning Event with it, and no CronJob."""
    body = await eventually(ready(k8s, name, "False", reason))
    await eventually(lambda: reason in event_reasons(k8s, name))
    warning = next(e for e in k8s.events(name) if e["reason"] == reason)
    assert warning["type"] == "Warning"
    assert cronjob(k8s, name) is None
    return body  # type: ignore[no-any-return]


def container(k8s: Cluster, name: str) -> dict[str, Any]:
    made = cronjob(k8s, name)
    assert made is not None
    return made["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


@pytest.fixture
async def permissive(k8s: Cluster) -> AsyncIterator[Runtime]:
    """An operator whose admin allows one image prefix, one NFS server and 2 CPUs / 2Gi."""
    current = fast_settings(
        k8s.kubeconfig,
        job_allowed_images=("mirror.example/ragkeeper-rag:*",),
        job_allowed_nfs_servers=("nfs.example",),
        job_max_cpu="2",
        job_max_memory="2Gi",
    )
    async with operator_within_rbac(k8s, current) as runtime:
        yield runtime


async def test_host_path_is_refused(k8s: Cluster, operator: Runtime) -> None:
    await prepare(k8s)
    await k8s.create_datasource(local_datasource(local={"volume": {"hostPath": {"path": "/"}}}))

    body = await refused(k8s, "team-docs", "HostPathNotAllowed")
    assert "hostPath" in condition(body, "Ready")["message"]  # type: ignore[index]


async def test_a_refused_host_path_source_is_still_purged(k8s: Cluster, operator: Runtime) -> None:
    """Stored before hostPath was refused, it may have documents: deleting it purges them."""
    await prepare(k8s)
    await k8s.create_datasource(local_datasource(local={"volume": {"hostPath": {"path": "/"}}}))
    await refused(k8s, "team-docs", "HostPathNotAllowed")

    await k8s.delete_datasource(NAMESPACE, "team-docs")

    jobs = await eventually(
        lambda: [j for j in k8s.all("batch/v1/jobs", NAMESPACE) if "purge" in j["metadata"]["name"]]
    )
    pod = jobs[0]["spec"]["template"]["spec"]
    assert (env_of(jobs[0])["RUN_MODE"], env_of(jobs[0])["RAG_PIPELINE_ID"]) == (
        "purge",
        f"{NAMESPACE}/team-docs",
    )
    assert all("hostPath" not in volume for volume in pod["volumes"])
    await k8s.complete_job(NAMESPACE, jobs[0]["metadata"]["name"])
    await eventually(lambda: k8s.obj(DS, NAMESPACE, "team-docs") is None)
    # kopf posts Events from a background queue: the last one may follow the deletion.
    await eventually(lambda: "Purged" in event_reasons(k8s, "team-docs"))


async def test_image_not_allowed_is_refused(k8s: Cluster, operator: Runtime) -> None:
    await prepare(k8s)
    await k8s.create_datasource(local_datasource(image="evil.example/miner:latest"))

    body = await refused(k8s, "team-docs", "ImageNotAllowed")
    message = condition(body, "Ready")["message"]  # type: ignore[index]
    assert "evil.example/miner:latest" in message
    assert "operator.jobs.policy.allowedImages" in message


async def test_image_on_the_allow_list_runs(k8s: Cluster, permissive: Runtime) -> None:
    await prepare(k8s)
    await k8s.create_datasource(local_datasource(image=MIRROR))
    await k8s.create_datasource(local_datasource("other", image="evil.example/miner:1"))

    await eventually(ready(k8s, "team-docs", "True", "CronJobReady"))
    assert container(k8s, "team-docs")["image"] == MIRROR
    await refused(k8s, "other", "ImageNotAllowed")


async def test_nfs_server_not_allowed_is_refused(k8s: Cluster, operator: Runtime) -> None:
    await prepare(k8s)
    await k8s.create_datasource(local_datasource(local={"volume": NFS}))

    await refused(k8s, "team-docs", "NfsServerNotAllowed")


async def test_nfs_server_on_the_allow_list_is_mounted(k8s: Cluster, permissive: Runtime) -> None:
    await prepare(k8s)
    await k8s.create_datasource(local_datasource(local={"volume": NFS}))
    other = {"nfs": {"server": "10.0.0.9", "path": "/"}}
    await k8s.create_datasource(local_datasource("other", local={"volume": other}))

    await eventually(ready(k8s, "team-docs", "True"))
    pod = cronjob(k8s, "team-docs")["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[index]
    assert {"name": "source", **NFS} in pod["volumes"]
    await refused(k8s, "other", "NfsServerNotAllowed")


async def test_resources_above_the_cap_are_refused(k8s: Cluster, operator: Runtime) -> None:
    await prepare(k8s)
    await k8s.create_datasource(local_datasource(resources={"limits": {"memory": "64Gi"}}))
    await k8s.create_datasource(local_datasource("odd", resources={"requests": {"cpu": "lots"}}))

    body = await refused(k8s, "team-docs", "ResourcesAboveCap")
    assert "JOB_MAX_MEMORY" in condition(body, "Ready")["message"]  # type: ignore[index]
    await refused(k8s, "odd", "InvalidResources")


async def test_resources_within_the_cap_and_defaults(k8s: Cluster, permissive: Runtime) -> None:
    await prepare(k8s)
    asked = {"requests": {"memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    await k8s.create_datasource(local_datasource(resources=asked))
    await k8s.create_datasource(local_datasource("plain"))

    await eventually(ready(k8s, "team-docs", "True"))
    assert container(k8s, "team-docs")["resources"] == {
        "requests": {"cpu": "100m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    await eventually(ready(k8s, "plain", "True"))
    assert container(k8s, "plain")["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }


async def test_credentials_secret_without_the_grant_is_refused_until_granted(
    k8s: Cluster, operator: Runtime
) -> None:
    await prepare(k8s)
    await k8s.create_secret(NAMESPACE, "drive", ["credentials.json"])
    await k8s.create_datasource(drive_datasource())

    body = await refused(k8s, "handbook", "CredentialsNotGranted")
    message = condition(body, "Ready")["message"]  # type: ignore[index]
    assert 'ragkeeper.dev/credentials: "true"' in message
    assert "JOB_CREDENTIALS_LABEL" in message

    await k8s.call(
        "PATCH",
        f"/api/v1/namespaces/{NAMESPACE}/secrets/drive",
        {"metadata": {"labels": GRANTED}},
        headers=MERGE,
    )
    await eventually(ready(k8s, "handbook", "True"))
    assert cronjob(k8s, "handbook") is not None


async def test_credentials_secret_with_the_grant_is_mounted(
    k8s: Cluster, operator: Runtime
) -> None:
    await prepare(k8s)
    await k8s.create_secret(NAMESPACE, "drive", ["credentials.json"], GRANTED)
    not_true = {"ragkeeper.dev/credentials": "yes"}
    await k8s.create_secret(NAMESPACE, "other-drive", ["credentials.json"], not_true)
    other = drive_datasource("other")
    other["spec"]["googleDrive"]["credentialsSecretRef"]["name"] = "other-drive"
    await k8s.create_datasource(drive_datasource())
    await k8s.create_datasource(other)

    await eventually(ready(k8s, "handbook", "True", "CronJobReady"))
    pod = cronjob(k8s, "handbook")["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[index]
    secret = next(v for v in pod["volumes"] if v["name"] == builders.GOOGLE_VOLUME)["secret"]
    assert secret["secretName"] == "drive"
    await refused(k8s, "other", "CredentialsNotGranted")


# -- a CronJob made before the refusal ------------------------------------------------------------


async def test_refused_edit_suspends_the_cronjob_and_refuses_syncs(
    k8s: Cluster, operator: Runtime
) -> None:
    await prepare(k8s)
    await k8s.create_datasource(local_datasource())
    await eventually(ready(k8s, "team-docs", "True"))
    host_path = {"hostPath": {"path": "/"}, "persistentVolumeClaim": None}

    await k8s.patch_datasource(NAMESPACE, "team-docs", {"spec": {"local": {"volume": host_path}}})

    await eventually(ready(k8s, "team-docs", "False", "HostPathNotAllowed"))
    made = await eventually(
        lambda: (cj := cronjob(k8s, "team-docs")) and cj["spec"]["suspend"] and cj
    )
    volumes = made["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
    assert all("hostPath" not in volume for volume in volumes)
    await eventually(lambda: "CronJobSuspended" in event_reasons(k8s, "team-docs"))

    key = builders.SYNC_REQUEST_ANNOTATION
    annotations = {"metadata": {"annotations": {key: "2026-01-01T12:00:00Z"}}}
    await k8s.patch_datasource(NAMESPACE, "team-docs", annotations)
    await eventually(lambda: "SyncRefused" in event_reasons(k8s, "team-docs"))
    assert k8s.all("batch/v1/jobs", NAMESPACE) == []

    await k8s.patch_datasource(
        NAMESPACE, "team-docs", {"spec": {"local": {"volume": {**PVC, "hostPath": None}}}}
    )
    await eventually(ready(k8s, "team-docs", "True"))
    await eventually(lambda: cronjob(k8s, "team-docs")["spec"]["suspend"] is False)  # type: ignore[index]


async def test_tightened_policy_suspends_the_cronjob_on_restart(k8s: Cluster) -> None:
    await prepare(k8s)
    allowing = fast_settings(k8s.kubeconfig, job_allowed_images=(MIRROR,))
    async with operator_within_rbac(k8s, allowing):
        await k8s.create_datasource(local_datasource(image=MIRROR))
        await eventually(ready(k8s, "team-docs", "True"))

    async with operator_within_rbac(k8s, fast_settings(k8s.kubeconfig)):
        await eventually(ready(k8s, "team-docs", "False", "ImageNotAllowed"))
        await eventually(lambda: cronjob(k8s, "team-docs")["spec"]["suspend"] is True)  # type: ignore[index]
        await eventually(lambda: "CronJobSuspended" in event_reasons(k8s, "team-docs"))
    body = k8s.obj(DS, NAMESPACE, "team-docs")
    assert condition(body, "Ready")["reason"] == "ImageNotAllowed"  # type: ignore[index]
