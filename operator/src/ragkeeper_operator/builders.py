"""Pure functions from a DataSource to the Kubernetes objects that run it.

``build_cronjob`` is the heart of the operator: the scheduled CronJob with the
hardened pod the ingestion job runs in. ``build_manual_job`` instantiates that
CronJob's template once (the "sync now" annotation, like ``kubectl create job
--from=cronjob/...``), and ``build_purge_job`` runs the same image with
``RUN_MODE=purge`` when a DataSource with ``deletionPolicy: Delete`` goes away.

No function here talks to the API; every result is validated against the
official schemas in the tests. Naming, labels and the spec hash live here too,
so handlers and tests agree on them; ``drift.py`` compares a live CronJob with
the one built here.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any, cast

import kopf

from ragkeeper_operator import policy
from ragkeeper_operator.settings import OperatorSettings
from ragkeeper_operator.spec import DataSourceSpec

GROUP = "ragkeeper.dev"
VERSION = "v1alpha1"
PLURAL = "datasources"
KIND = "DataSource"

CONTAINER = "ingest"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "ragkeeper-operator"
DATASOURCE_LABEL = "ragkeeper.dev/datasource"
RUN_MODE_LABEL = "ragkeeper.dev/run-mode"
SPEC_HASH_ANNOTATION = "ragkeeper.dev/spec-hash"
SYNC_REQUEST_ANNOTATION = "ragkeeper.dev/sync-requested-at"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"

SOURCE_VOLUME = "source"
TMP_VOLUME = "tmp"
GOOGLE_VOLUME = "google-credentials"
GOOGLE_MOUNT = "/var/run/secrets/ragkeeper/google"
GOOGLE_FILE = "credentials.json"
RUN_AS = 10001
CRONJOB_NAME_LIMIT = 52  # the CronJob controller appends an 11-character suffix to Job names
NAME_LIMIT = 63


def _digest(value: Any, length: int = 10) -> str:
    raw = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:length]


def child_name(base: str, suffix: str = "", limit: int = NAME_LIMIT) -> str:
    """``base-suffix``, shortened with a stable hash when it would exceed ``limit``."""
    name = f"{base}-{suffix}" if suffix else base
    if len(name) <= limit:
        return name
    tail = f"-{_digest(name, 8)}" + (f"-{suffix}" if suffix else "")
    return base[: limit - len(tail)].rstrip("-.") + tail


def cronjob_name(datasource: str) -> str:
    """The owned CronJob's name: ``ragkeeper-<datasource>``, at most 52 characters."""
    return child_name(f"ragkeeper-{datasource}", limit=CRONJOB_NAME_LIMIT)


def manual_job_name(datasource: str, request_value: str) -> str:
    """One Job name per sync request value, so a repeated request is idempotent."""
    return child_name(cronjob_name(datasource), f"manual-{_digest(request_value, 8)}")


def purge_job_name(datasource: str, uid: str) -> str:
    """The purge Job of one DataSource incarnation (a re-created one purges anew)."""
    return child_name(cronjob_name(datasource), f"purge-{_digest(uid, 6)}")


def pipeline_id(namespace: str, name: str) -> str:
    """The owner key of this source's documents in the knowledge store."""
    return f"{namespace}/{name}"


def labels_for(name: str, run_mode: str | None = None) -> dict[str, str]:
    """Labels that let the operator find (and watch) the objects it made."""
    labels = {
        "app.kubernetes.io/name": "ragkeeper-rag",
        "app.kubernetes.io/component": "ingestion",
        "app.kubernetes.io/part-of": "ragkeeper",
        MANAGED_BY_LABEL: MANAGED_BY,
        DATASOURCE_LABEL: name if len(name) <= NAME_LIMIT else child_name(name, limit=NAME_LIMIT),
    }
    if run_mode is not None:
        labels[RUN_MODE_LABEL] = run_mode
    return labels


def _meta(body: Mapping[str, Any]) -> tuple[str, str]:
    metadata = body.get("metadata", {})
    return str(metadata["namespace"]), str(metadata["name"])


def _env(
    body: Mapping[str, Any], spec: DataSourceSpec, settings: OperatorSettings, run_mode: str
) -> list[dict[str, Any]]:
    namespace, name = _meta(body)
    env: list[dict[str, Any]] = [
        {"name": "RUN_MODE", "value": run_mode},
        {"name": "RAG_PIPELINE_TYPE", "value": spec.pipeline_type},
        {"name": "RAG_PIPELINE_ID", "value": pipeline_id(namespace, name)},
    ]
    if run_mode != "purge":
        if spec.type == "local":
            env.append({"name": "RAG_WATCH_DIRECTORY", "value": spec.local_path})
        else:
            env.append({"name": "RAG_WATCH_FOLDER_ID", "value": spec.folder_id})
            env.append(
                {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GOOGLE_MOUNT}/{GOOGLE_FILE}"}
            )
    env.append(
        {
            "name": "DATABASE_URL",
            "valueFrom": {
                "secretKeyRef": {
                    "name": settings.database_secret_name,
                    "key": settings.database_secret_key,
                }
            },
        }
    )
    for var, value in (
        ("EMBEDDING_PROVIDER", settings.embedding_provider),
        ("EMBEDDING_BASE_URL", settings.embedding_base_url),
        ("EMBEDDING_MODEL_CHOICE", settings.embedding_model_choice),
    ):
        if value:
            env.append({"name": var, "value": value})
    if settings.embedding_api_key_secret_name:
        env.append(
            {
                "name": "EMBEDDING_API_KEY",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": settings.embedding_api_key_secret_name,
                        "key": settings.embedding_api_key_secret_key,
                    }
                },
            }
        )
    env.append(
        {"name": "RAG_OCR_ENABLED", "value": "true" if settings.job_ocr_enabled else "false"}
    )
    env.append({"name": "RAG_OCR_MAX_PIXELS", "value": str(settings.job_ocr_max_pixels)})
    if run_mode != "purge":
        env.extend(_caption_env(settings))
    # An emptyDir is mounted there (B108 does not apply).
    env.append({"name": "HOME", "value": "/tmp"})  # nosec B108
    return env


def _caption_env(settings: OperatorSettings) -> list[dict[str, Any]]:
    """``RAG_IMAGE_CAPTIONS`` and the vision model's ``RAG_CAPTION_*``, when captions are on.

    The API key is a ``secretKeyRef`` to the Secret the admin named, in the Job's namespace.
    """
    if not settings.job_image_captions:
        return []
    env: list[dict[str, Any]] = [
        {"name": "RAG_IMAGE_CAPTIONS", "value": "true"},
        {"name": "RAG_CAPTION_BASE_URL", "value": settings.job_caption_base_url or ""},
        {"name": "RAG_CAPTION_MODEL", "value": settings.job_caption_model or ""},
    ]
    if settings.job_caption_api_key_secret_name:
        env.append(
            {
                "name": "RAG_CAPTION_API_KEY",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": settings.job_caption_api_key_secret_name,
                        "key": settings.job_caption_api_key_secret_key,
                    }
                },
            }
        )
    return env


def _volumes(
    spec: DataSourceSpec, settings: OperatorSettings, run_mode: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": settings.job_tmp_size_limit}}
    ]
    # The emptyDir volume above is mounted at /tmp (B108 does not apply).
    mounts: list[dict[str, Any]] = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]  # nosec B108
    if run_mode == "purge":
        return volumes, mounts
    if spec.type == "local":
        source = copy.deepcopy(dict(spec.local_volume))
        if "persistentVolumeClaim" in source:
            source["persistentVolumeClaim"]["readOnly"] = True
        volumes.append({"name": SOURCE_VOLUME, **source})
        mount: dict[str, Any] = {
            "name": SOURCE_VOLUME,
            "mountPath": spec.local_path,
            "readOnly": True,
        }
        if spec.local_sub_path:
            mount["subPath"] = spec.local_sub_path
        mounts.append(mount)
    elif spec.credentials is not None:
        volumes.append(
            {
                "name": GOOGLE_VOLUME,
                "secret": {
                    "secretName": spec.credentials.name,
                    "items": [{"key": spec.credentials.key, "path": GOOGLE_FILE}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": GOOGLE_VOLUME, "mountPath": GOOGLE_MOUNT, "readOnly": True})
    return volumes, mounts


def build_pod_template(
    body: Mapping[str, Any], spec: DataSourceSpec, settings: OperatorSettings, run_mode: str
) -> dict[str, Any]:
    """The hardened pod the ingestion job runs in (non-root, read-only root, no token)."""
    _, name = _meta(body)
    volumes, mounts = _volumes(spec, settings, run_mode)
    container = {
        "name": CONTAINER,
        "image": spec.image or settings.rag_image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": _env(body, spec, settings, run_mode),
        "resources": policy.job_resources(spec, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "metadata": {"labels": labels_for(name, run_mode)},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": volumes,
        },
    }


def _job_spec(
    body: Mapping[str, Any], spec: DataSourceSpec, settings: OperatorSettings, run_mode: str
) -> dict[str, Any]:
    return {
        "backoffLimit": settings.job_backoff_limit,
        "activeDeadlineSeconds": spec.active_deadline_seconds
        or settings.job_active_deadline_seconds,
        "ttlSecondsAfterFinished": settings.job_ttl_seconds_after_finished,
        # Exit 2 (configuration) and 3 (credentials) will fail again: do not retry them.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [2, 3]},
                }
            ]
        },
        "template": build_pod_template(body, spec, settings, run_mode),
    }


def build_cronjob(
    body: Mapping[str, Any], spec: DataSourceSpec, settings: OperatorSettings
) -> dict[str, Any]:
    """The CronJob that runs one sync per schedule tick, owned by the DataSource."""
    namespace, name = _meta(body)
    cron_spec: dict[str, Any] = {
        "schedule": spec.schedule,
        "suspend": spec.suspend,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": settings.starting_deadline_seconds,
        "successfulJobsHistoryLimit": settings.successful_jobs_history_limit,
        "failedJobsHistoryLimit": settings.failed_jobs_history_limit,
        "jobTemplate": {
            "metadata": {"labels": labels_for(name, "single")},
            "spec": _job_spec(body, spec, settings, "single"),
        },
    }
    if spec.time_zone:
        cron_spec["timeZone"] = spec.time_zone
    cronjob: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cronjob_name(name),
            "namespace": namespace,
            "labels": labels_for(name),
            "annotations": {SPEC_HASH_ANNOTATION: _digest(cron_spec, 16)},
        },
        "spec": cron_spec,
    }
    kopf.append_owner_reference(cronjob, owner=cast(kopf.Body, body))
    return cronjob


def build_manual_job(cronjob: Mapping[str, Any], request_value: str) -> dict[str, Any]:
    """One immediate Job from the CronJob's template, as ``kubectl create job --from`` does."""
    metadata = cronjob["metadata"]
    template = copy.deepcopy(dict(cronjob["spec"]["jobTemplate"]))
    labels = dict(template.get("metadata", {}).get("labels", {}))
    datasource = labels.get(DATASOURCE_LABEL, metadata["name"])
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": manual_job_name(datasource, request_value),
            "namespace": metadata["namespace"],
            "labels": labels,
            "annotations": {
                "cronjob.kubernetes.io/instantiate": "manual",
                SYNC_REQUEST_ANNOTATION: request_value,
            },
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }
    return job


def build_purge_job(
    body: Mapping[str, Any], spec: DataSourceSpec, settings: OperatorSettings
) -> dict[str, Any]:
    """A Job deleting this source's documents (``RUN_MODE=purge``).

    It deliberately has no owner: a foreground cascading delete of the DataSource
    would otherwise kill the purge it is waiting for. ``ttlSecondsAfterFinished``
    removes it afterwards.
    """
    namespace, name = _meta(body)
    uid = str(body.get("metadata", {}).get("uid", ""))
    job_spec = _job_spec(body, spec, settings, "purge")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": purge_job_name(name, uid),
            "namespace": namespace,
            "labels": labels_for(name, "purge"),
            "annotations": {"ragkeeper.dev/datasource-uid": uid},
        },
        "spec": job_spec,
    }
