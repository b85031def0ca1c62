"""Builders as pure functions: every object they make passes the official schemas."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from ragkeeper_operator import builders
from ragkeeper_operator.settings import OperatorSettings
from ragkeeper_operator.spec import parse_spec

K8S_VERSION = "1.37.0"
UID = "0b7b1f7e-6c1c-4f43-9a7e-3d1f5b0e9a11"

VOLUMES: dict[str, dict[str, Any]] = {
    "pvc": {"persistentVolumeClaim": {"claimName": "docs"}},
    "nfs": {"nfs": {"server": "nfs.example", "path": "/exports/docs"}},
    "configMap": {"configMap": {"name": "docs"}},
}


def settings(**overrides: Any) -> OperatorSettings:
    values: dict[str, Any] = {
        "rag_image": "registry.example/ragkeeper-rag:1.0.0",
        "embedding_provider": "openai",
        "embedding_base_url": "https://api.example/v1",
        "embedding_model_choice": "text-embedding-3-small",
        "embedding_api_key_secret_name": "embedding",
        "watch_namespaces": (),
    }
    values.update(overrides)
    return OperatorSettings(**values)


def datasource(spec: dict[str, Any], name: str = "team-docs") -> dict[str, Any]:
    return {
        "apiVersion": "ragkeeper.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": name, "namespace": "docs", "uid": UID, "generation": 3},
        "spec": spec,
    }


def local_spec(volume: str = "pvc", **extra: Any) -> dict[str, Any]:
    return {
        "type": "local",
        "schedule": "*/15 * * * *",
        "local": {"path": "/data", "volume": VOLUMES[volume]},
        **extra,
    }


DRIVE_SPEC = {
    "type": "googleDrive",
    "schedule": "0 * * * *",
    "timeZone": "Europe/Berlin",
    "googleDrive": {
        "folderId": "1AbC",
        "credentialsSecretRef": {"name": "drive", "key": "sa.json"},
    },
}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    job = spec["jobTemplate"]["spec"] if "jobTemplate" in spec else spec
    return job["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def env(workload: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(workload)["env"]}


@pytest.mark.parametrize("volume", sorted(VOLUMES))
def test_build_cronjob_local_passes_strict_schema(volume: str) -> None:
    body = datasource(local_spec(volume, resources={"limits": {"memory": "2Gi"}}))
    cronjob = builders.build_cronjob(body, parse_spec(body["spec"]), settings(job_max_memory="2Gi"))

    kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)
    assert cronjob["metadata"]["name"] == "ragkeeper-team-docs"
    mount = next(m for m in container(cronjob)["volumeMounts"] if m["name"] == "source")
    assert (mount["mountPath"], mount["readOnly"]) == ("/data", True)
    assert container(cronjob)["resources"]["limits"]["memory"] == "2Gi"
    assert container(cronjob)["resources"]["requests"]["cpu"] == "100m"
    assert container(cronjob)["resources"]["limits"]["cpu"] == "1"
    values = env(cronjob)
    assert values["RAG_WATCH_DIRECTORY"] == "/data"
    assert values["RAG_PIPELINE_TYPE"] == "local"
    assert values["RAG_PIPELINE_ID"] == "docs/team-docs"


def test_build_cronjob_drive_mounts_credentials_as_file() -> None:
    body = datasource(DRIVE_SPEC, name="handbook")
    cronjob = builders.build_cronjob(body, parse_spec(DRIVE_SPEC), settings())

    kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)
    assert cronjob["spec"]["timeZone"] == "Europe/Berlin"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    secret = next(v for v in pod["volumes"] if v["name"] == "google-credentials")["secret"]
    assert secret["secretName"] == "drive"
    assert secret["items"] == [{"key": "sa.json", "path": "credentials.json"}]
    values = env(cronjob)
    assert values["GOOGLE_APPLICATION_CREDENTIALS"].endswith("/credentials.json")
    assert values["RAG_WATCH_FOLDER_ID"] == "1AbC"
    assert values["RAG_PIPELINE_TYPE"] == "google_drive"
    assert values["EMBEDDING_API_KEY"] == {
        "secretKeyRef": {"name": "embedding", "key": "EMBEDDING_API_KEY"}
    }
    assert values["EMBEDDING_BASE_URL"] == "https://api.example/v1"


def test_build_cronjob_is_hardened_and_owned() -> None:
    body = datasource(local_spec())
    cronjob = builders.build_cronjob(body, parse_spec(body["spec"]), settings())
    spec = cronjob["spec"]
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    ctr = container(cronjob)

    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 300
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 3)
    assert job["ttlSecondsAfterFinished"] == 86400
    assert job["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert ctr["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": "tmp", "mountPath": "/tmp"} in ctr["volumeMounts"]
    assert pod["volumes"][1]["persistentVolumeClaim"]["readOnly"] is True
    owner = cronjob["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["blockOwnerDeletion"]) == ("DataSource", UID, True)
    assert "args" not in ctr and "command" not in ctr


def test_spec_overrides_image_and_deadline() -> None:
    body = datasource(local_spec(image="mirror.example/rag:2", activeDeadlineSeconds=600))
    cronjob = builders.build_cronjob(body, parse_spec(body["spec"]), settings())
    assert container(cronjob)["image"] == "mirror.example/rag:2"
    assert cronjob["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 600


def test_build_manual_job_copies_the_template_once_per_value() -> None:
    body = datasource(local_spec())
    cronjob = builders.build_cronjob(body, parse_spec(body["spec"]), settings())
    cronjob["metadata"]["uid"] = "11111111-2222-3333-4444-555555555555"

    job = builders.build_manual_job(cronjob, "2026-01-01T12:00:00Z")
    again = builders.build_manual_job(cronjob, "2026-01-01T12:00:00Z")
    other = builders.build_manual_job(cronjob, "2026-01-01T13:00:00Z")

    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    assert job["metadata"]["name"] == again["metadata"]["name"] != other["metadata"]["name"]
    assert job["spec"] == cronjob["spec"]["jobTemplate"]["spec"]
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"


def test_build_purge_job_has_no_owner_and_purge_env() -> None:
    body = datasource(DRIVE_SPEC, name="handbook")
    job = builders.build_purge_job(body, parse_spec(DRIVE_SPEC), settings())

    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    assert "ownerReferences" not in job["metadata"]
    values = env(job)
    assert values["RUN_MODE"] == "purge"
    assert values["RAG_PIPELINE_ID"] == "docs/handbook"
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in values
    names = {v["name"] for v in job["spec"]["template"]["spec"]["volumes"]}
    assert names == {"tmp"}


def test_captions_reach_scheduled_jobs_with_the_key_from_a_secret() -> None:
    captions = settings(
        job_image_captions=True,
        job_caption_base_url="http://vision.models:8000/v1",
        job_caption_model="qwen2.5-vl",
        job_caption_api_key_secret_name="vision",  # pragma: allowlist secret
        job_caption_api_key_secret_key="api-key",  # pragma: allowlist secret
    )
    body = datasource(local_spec())
    cronjob = builders.build_cronjob(body, parse_spec(body["spec"]), captions)
    kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)
    values = env(cronjob)
    assert values["RAG_IMAGE_CAPTIONS"] == "true"
    assert values["RAG_CAPTION_BASE_URL"] == "http://vision.models:8000/v1"
    assert values["RAG_CAPTION_MODEL"] == "qwen2.5-vl"
    assert values["RAG_CAPTION_API_KEY"] == {"secretKeyRef": {"name": "vision", "key": "api-key"}}
    # the purge Job captions nothing and references no key
    purge = env(builders.build_purge_job(body, parse_spec(body["spec"]), captions))
    assert not {name for name in purge if name.startswith(("RAG_IMAGE", "RAG_CAPTION"))}
    # off (the default), or on without a key Secret (a model server with no key)
    assert "RAG_IMAGE_CAPTIONS" not in env(
        builders.build_cronjob(body, parse_spec(body["spec"]), settings())
    )
    keyless = settings(
        job_image_captions=True, job_caption_base_url="http://v/v1", job_caption_model="m"
    )
    values = env(builders.build_cronjob(body, parse_spec(body["spec"]), keyless))
    assert values["RAG_IMAGE_CAPTIONS"] == "true" and "RAG_CAPTION_API_KEY" not in values


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        ({}, "JOB_CAPTION_BASE_URL and JOB_CAPTION_MODEL"),
        ({"job_caption_base_url": "http://v/v1"}, "JOB_CAPTION_MODEL"),
        ({"job_caption_model": "m", "job_caption_base_url": " "}, "JOB_CAPTION_BASE_URL"),
    ],
)
def test_captions_on_without_a_model_is_refused(overrides: dict[str, Any], missing: str) -> None:
    with pytest.raises(ValueError, match=f"JOB_IMAGE_CAPTIONS=true needs {missing}"):
        settings(job_image_captions=True, **overrides)


def test_names_stay_within_kubernetes_limits() -> None:
    long = "a" * 60
    assert len(builders.cronjob_name(long)) <= 52
    assert builders.cronjob_name(long) != builders.cronjob_name(long[:-1] + "b")
    assert len(builders.manual_job_name(long, "x")) <= 63
    assert len(builders.purge_job_name(long, UID)) <= 63
    assert builders.cronjob_name("docs") == "ragkeeper-docs"
