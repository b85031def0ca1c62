"""Contracts across the import wall: the operator and the ingestion job agree without importing
each other (``.importlinter``), so these tests import both and check the seams.

* The env the operator builds for a Job loads into the job's own ``RagSettings`` and means what
  the DataSource says: pipeline type, pipeline id ``<namespace>/<name>``, run mode, directory or
  folder id, credentials file inside a mounted volume, embedding settings.
* The stats JSON a real run of the job writes to its termination log parses into the
  DataSource status the operator writes, counts intact.
* Each exit code means the same on both sides: ``exit_code_for`` gives it for the error class,
  and the operator turns it into the reason docs/architecture.md documents (and does not
  retry 2 and 3).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from ragkeeper_knowledge import errors as kerrors
from ragkeeper_knowledge.embedding import EMBEDDING_VARIABLES, EmbeddingConfig
from ragkeeper_operator import builders, status
from ragkeeper_operator.settings import OperatorSettings
from ragkeeper_operator.spec import parse_spec
from ragkeeper_rag import errors as rag_errors
from ragkeeper_rag.cli import default_pipeline_id
from ragkeeper_rag.settings import RagSettings
from tests.rag.test_cli import STATS_KEYS, job_env, run_job

NAMESPACE = "docs"
UID = "0b7b1f7e-6c1c-4f43-9a7e-3d1f5b0e9a11"
SECRET_SAMPLES = {
    "DATABASE_URL": "postgresql://ragkeeper:s3cret@db.example.com:5432/ragkeeper",
    "EMBEDDING_API_KEY": "sk-sample-key-123",
    "RAG_CAPTION_API_KEY": "sk-vision-key-456",  # pragma: allowlist secret
}
LOCAL = {
    "type": "local",
    "schedule": "*/15 * * * *",
    "local": {"path": "/data/handbook", "volume": {"persistentVolumeClaim": {"claimName": "docs"}}},
}
DRIVE = {
    "type": "googleDrive",
    "schedule": "0 * * * *",
    "googleDrive": {
        "folderId": "1AbC-folder_id",
        "credentialsSecretRef": {"name": "drive", "key": "sa.json"},
    },
}
# Variables of the operator's and the job's environment that must not leak into these tests.
_PREFIXES = ("RAG_", "EMBEDDING_", "GOOGLE_", "DATABASE_", "JOB_", "CRONJOB_")
_NAMES = {"RUN_MODE", "CHECK_INTERVAL", "WATCH_NAMESPACES"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(_PREFIXES) or name in _NAMES:
            monkeypatch.delenv(name)
    return monkeypatch


def datasource(spec: dict[str, Any], name: str = "team-docs") -> dict[str, Any]:
    return {
        "apiVersion": "ragkeeper.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": UID, "generation": 3},
        "spec": spec,
    }


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    job = spec["jobTemplate"]["spec"] if "jobTemplate" in spec else spec
    return job["template"]["spec"]  # type: ignore[no-any-return]


def resolved_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's env as the kubelet hands it over (Secret references given sample values)."""
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert set(item["valueFrom"]) == {"secretKeyRef"}, item
            env[item["name"]] = SECRET_SAMPLES[item["name"]]
    return env


def load_job_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> RagSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return RagSettings()


def variables_the_job_reads() -> set[str]:
    names = {"HOME"}  # for the libraries, not a setting
    names.update(EMBEDDING_VARIABLES.values())
    for field in RagSettings.model_fields.values():
        alias = field.validation_alias
        names.update(str(choice) for choice in getattr(alias, "choices", ()))
    return names


def mount_of(pod: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume mount ``path`` lies in (at or below its mountPath)."""
    container = pod["containers"][0]
    for mount in container["volumeMounts"]:
        if PurePosixPath(path).is_relative_to(mount["mountPath"]):
            return mount  # type: ignore[no-any-return]
    raise AssertionError(f"{path} is not inside any volume mount of the job")


@pytest.mark.parametrize(
    ("spec", "pipeline_type"), [(LOCAL, "local"), (DRIVE, "google_drive")], ids=["local", "drive"]
)
def test_operator_job_env_loads_into_the_job_settings(
    clean_env: pytest.MonkeyPatch, spec: dict[str, Any], pipeline_type: str
) -> None:
    body = datasource(spec)
    cronjob = builders.build_cronjob(body, parse_spec(spec), OperatorSettings())
    pod = pod_spec(cronjob)
    env = resolved_env(pod["containers"][0])
    assert set(env) <= variables_the_job_reads(), "the operator sets a variable the job ignores"

    settings = load_job_settings(clean_env, env)

    assert settings.pipeline_type == pipeline_type
    assert default_pipeline_id(settings) == f"{NAMESPACE}/team-docs"
    assert settings.run_mode == "single"
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == SECRET_SAMPLES["DATABASE_URL"]
    assert settings.embedding == EmbeddingConfig()  # operator defaults: the offline model
    if pipeline_type == "local":
        assert settings.watch_directory == Path("/data/handbook")
        mount = mount_of(pod, "/data/handbook")
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["persistentVolumeClaim"]["claimName"] == "docs"
    else:
        assert settings.folder_id == "1AbC-folder_id"
        credentials = settings.google_application_credentials
        assert credentials is not None
        mount = mount_of(pod, str(credentials))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == "drive"
        items = {item["path"]: item["key"] for item in volume["secret"]["items"]}
        relative = str(PurePosixPath(credentials).relative_to(mount["mountPath"]))
        assert items[relative] == "sa.json"


def test_purge_job_env_loads_as_purge_of_the_same_pipeline(clean_env: pytest.MonkeyPatch) -> None:
    body = datasource(LOCAL)
    job = builders.build_purge_job(body, parse_spec(LOCAL), OperatorSettings())
    settings = load_job_settings(clean_env, resolved_env(pod_spec(job)["containers"][0]))
    assert (settings.run_mode, settings.pipeline_type) == ("purge", "local")
    assert default_pipeline_id(settings) == f"{NAMESPACE}/team-docs"


def test_operator_embedding_settings_reach_the_job(clean_env: pytest.MonkeyPatch) -> None:
    operator_settings = OperatorSettings(
        embedding_provider="openai",
        embedding_base_url="https://api.example/v1",
        embedding_model_choice="text-embedding-3-large",
        embedding_api_key_secret_name="embedding",
    )
    cronjob = builders.build_cronjob(datasource(DRIVE), parse_spec(DRIVE), operator_settings)
    settings = load_job_settings(clean_env, resolved_env(pod_spec(cronjob)["containers"][0]))
    assert settings.embedding.provider == "openai"
    assert settings.embedding.base_url == "https://api.example/v1"
    assert settings.embedding.model == "text-embedding-3-large"
    assert settings.embedding.api_key is not None
    assert settings.embedding.api_key.get_secret_value() == SECRET_SAMPLES["EMBEDDING_API_KEY"]


@pytest.mark.parametrize("enabled", [True, False])
def test_operator_ocr_settings_reach_the_job(clean_env: pytest.MonkeyPatch, enabled: bool) -> None:
    operator_settings = OperatorSettings(job_ocr_enabled=enabled, job_ocr_max_pixels=12_000_000)
    cronjob = builders.build_cronjob(datasource(LOCAL), parse_spec(LOCAL), operator_settings)
    settings = load_job_settings(clean_env, resolved_env(pod_spec(cronjob)["containers"][0]))
    assert (settings.ocr_enabled, settings.ocr_max_pixels) == (enabled, 12_000_000)


def test_operator_caption_settings_reach_the_job(clean_env: pytest.MonkeyPatch) -> None:
    operator_settings = OperatorSettings(
        job_image_captions=True,
        job_caption_base_url="http://vision.models:8000/v1",
        job_caption_model="qwen2.5-vl",
        job_caption_api_key_secret_name="vision",  # pragma: allowlist secret
    )
    cronjob = builders.build_cronjob(datasource(LOCAL), parse_spec(LOCAL), operator_settings)
    settings = load_job_settings(clean_env, resolved_env(pod_spec(cronjob)["containers"][0]))
    assert settings.image_captions is True
    assert (settings.caption_base_url, settings.caption_model) == (
        "http://vision.models:8000/v1",
        "qwen2.5-vl",
    )
    assert settings.caption_api_key is not None
    assert settings.caption_api_key.get_secret_value() == SECRET_SAMPLES["RAG_CAPTION_API_KEY"]
    off = builders.build_cronjob(datasource(LOCAL), parse_spec(LOCAL), OperatorSettings())
    assert "RAG_IMAGE_CAPTIONS" not in resolved_env(pod_spec(off)["containers"][0])  # default off


def finished_pod(exit_code: int, message: str) -> dict[str, Any]:
    """A finished ingestion Pod as the API server reports it."""
    job_name = "ragkeeper-team-docs-29000000"
    return {
        "metadata": {
            "name": f"{job_name}-x7k2p",
            "labels": {builders.RUN_MODE_LABEL: "single", "job-name": job_name},
            "ownerReferences": [{"kind": "Job", "name": job_name}],
        },
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": builders.CONTAINER,
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "message": message,
                            "finishedAt": "2026-01-01T10:00:00Z",
                        }
                    },
                }
            ],
        },
    }


def run_as_the_operator_would(
    database_url: str, tmp_path: Path, **overrides: str
) -> tuple[int, dict[str, Any], str]:
    """The real job, with the env the operator builds for the local DataSource.

    The directory is a temp folder instead of the volume, the database the test one, and the
    embedder the hashing test double; the termination log is a file the test reads back.
    """
    pod = pod_spec(builders.build_cronjob(datasource(LOCAL), parse_spec(LOCAL), OperatorSettings()))
    env = resolved_env(pod["containers"][0])
    env.update(
        DATABASE_URL=database_url,
        RAG_WATCH_DIRECTORY=str(tmp_path / "docs"),
        HOME=str(tmp_path),
        EMBEDDING_PROVIDER="hashing",
    )
    env.update(overrides)
    code, stats, stderr = run_job(job_env(database_url, tmp_path, **env))
    assert stderr  # the job logs JSON lines there; stdout's last line is the stats
    return code, stats, (tmp_path / "termination-log").read_text(encoding="utf-8")


def test_real_stats_json_becomes_the_datasource_status(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\nRestart the thermostat.\n")
    (tmp_path / "docs" / "prices.csv").write_text("item,eur\nthermostat,129\n")
    (tmp_path / "docs" / "broken.pdf").write_bytes(b"%PDF-1.7 garbage")

    code, stats, message = run_as_the_operator_would(database_url, tmp_path)

    assert code == 0
    assert status.parse_stats(message) == stats
    outcome = status.run_outcome(finished_pod(code, message))
    assert outcome is not None
    result = status.apply_run({}, outcome, generation=3)
    last_run = result["lastRun"]
    for key in (*STATS_KEYS, "documents_total"):
        assert last_run[key] == stats[key], key
    assert (last_run["pipeline_id"], last_run["status"]) == (f"{NAMESPACE}/team-docs", "partial")
    assert (last_run["files_added"], last_run["files_failed"], last_run["documents_total"]) == (
        2,
        1,
        2,
    )
    assert last_run["exit_code"] == 0
    assert result["lastSuccessfulTime"] == "2026-01-01T10:00:00Z"
    assert outcome.files_failed == 1 and outcome.documents_total == 2
    condition = status.condition(result, status.LAST_RUN_SUCCEEDED)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "CompletedWithErrors")
    assert "2 added" in condition["message"] and "1 failed" in condition["message"]


def test_real_failed_run_reports_its_reason_in_the_status(
    database_url: str, tmp_path: Path
) -> None:
    code, stats, message = run_as_the_operator_would(
        database_url, tmp_path, RAG_WATCH_DIRECTORY=str(tmp_path / "missing")
    )

    assert code == rag_errors.EXIT_CONFIGURATION
    assert status.parse_stats(message) == stats
    outcome = status.run_outcome(finished_pod(code, message))
    assert outcome is not None
    result = status.apply_run({}, outcome, generation=3)
    assert result["lastRun"]["status"] == "failed"
    assert result["lastRun"]["error"] == stats["error"]
    condition = status.condition(result, status.LAST_RUN_SUCCEEDED)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "ConfigurationInvalid")
    assert condition["message"] == (
        f"job ragkeeper-team-docs-29000000 exited with 2: {stats['error']}"
    )


# Exit code -> (an error class of the job, the reason docs/architecture.md documents).
EXIT_CODES: list[tuple[int, type[BaseException] | None, str]] = [
    (0, None, "Succeeded"),
    (1, rag_errors.TransientError, "Failed"),
    (2, rag_errors.ConfigurationError, "ConfigurationInvalid"),
    (3, rag_errors.CredentialsError, "CredentialsInvalid"),
]


@pytest.mark.parametrize(("code", "error", "reason"), EXIT_CODES, ids=lambda v: str(v))
def test_each_exit_code_means_the_same_on_both_sides(
    code: int, error: type[BaseException] | None, reason: str
) -> None:
    if error is not None:
        assert rag_errors.exit_code_for(error("boom")) == code
    outcome = status.run_outcome(finished_pod(code, ""))
    assert outcome is not None
    assert outcome.reason == reason
    assert outcome.succeeded is (code == 0)


def test_the_knowledge_store_errors_take_the_same_codes() -> None:
    assert rag_errors.exit_code_for(kerrors.EmbeddingModelMismatch("x")) == 2
    assert rag_errors.exit_code_for(kerrors.EmbeddingCredentialsError("x")) == 3
    assert rag_errors.exit_code_for(kerrors.EmbeddingUnavailable("x")) == 1


def test_jobs_do_not_retry_configuration_and_credentials_failures() -> None:
    cronjob = builders.build_cronjob(datasource(LOCAL), parse_spec(LOCAL), OperatorSettings())
    rules = cronjob["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    (rule,) = [r for r in rules if r["action"] == "FailJob"]
    assert rule["onExitCodes"]["containerName"] == builders.CONTAINER
    assert set(rule["onExitCodes"]["values"]) == {
        rag_errors.EXIT_CONFIGURATION,
        rag_errors.EXIT_CREDENTIALS,
    }
    assert rag_errors.EXIT_OK not in rule["onExitCodes"]["values"]
