"""operator.jobs.imageCaptions: chart values -> the operator's env -> the Job's RAG_* settings.

The chain is checked end to end with both sides' own settings objects: the rendered operator
Deployment's env loads into ``OperatorSettings``, the CronJob the operator builds from it loads
into the job's ``RagSettings``, and the API key travels only as a ``secretKeyRef`` (the operator
neither holds the key nor gains any RBAC rule for it).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from ragkeeper_operator import builders
from ragkeeper_operator.settings import OperatorSettings
from ragkeeper_operator.spec import parse_spec
from ragkeeper_rag.settings import RagSettings
from tests.chart.tools import by_kind, helm_template, named, render

CAPTIONS = [
    "operator.jobs.imageCaptions.enabled=true",
    "operator.jobs.imageCaptions.baseUrl=http://vllm.models:8000/v1",
    "operator.jobs.imageCaptions.model=qwen2.5-vl-7b",
    "operator.jobs.imageCaptions.existingSecret=vision-api",
    "operator.jobs.imageCaptions.apiKeyKey=token",
]
LOCAL = {
    "type": "local",
    "schedule": "*/15 * * * *",
    "local": {"path": "/data", "volume": {"persistentVolumeClaim": {"claimName": "docs"}}},
}


def operator_env(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    deployment = named(objects, "Deployment", "-operator")
    return deployment["spec"]["template"]["spec"]["containers"][0]["env"]  # type: ignore[no-any-return]


def load(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], prefixes: tuple[str, ...]) -> None:
    """``env`` as the process environment, without other variables of these prefixes."""
    for name in [n for n in os.environ if n.startswith(prefixes)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def rbac_rules(objects: list[dict[str, Any]]) -> list[Any]:
    return [obj.get("rules") for obj in by_kind(objects, "ClusterRole") + by_kind(objects, "Role")]


def test_captions_travel_from_values_to_the_jobs_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = render(sets=CAPTIONS)
    env = operator_env(objects)
    assert all("valueFrom" not in e for e in env if e["name"].startswith("JOB_CAPTION"))
    plain = {e["name"]: e["value"] for e in env if "value" in e}
    assert plain["JOB_IMAGE_CAPTIONS"] == "true"
    assert plain["JOB_CAPTION_API_KEY_SECRET_NAME"] == "vision-api"  # pragma: allowlist secret

    load(monkeypatch, plain, ("JOB_", "RAG_", "EMBEDDING_"))
    settings = OperatorSettings()
    assert settings.job_image_captions is True
    assert (settings.job_caption_base_url, settings.job_caption_model) == (
        "http://vllm.models:8000/v1",
        "qwen2.5-vl-7b",
    )
    assert (settings.job_caption_api_key_secret_name, settings.job_caption_api_key_secret_key) == (
        "vision-api",
        "token",
    )

    body = {"metadata": {"name": "docs", "namespace": "team", "uid": "u-1"}, "spec": LOCAL}
    cronjob = builders.build_cronjob(body, parse_spec(LOCAL), settings)
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    job_env = {e["name"]: e for e in container["env"]}
    assert job_env["RAG_CAPTION_API_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "vision-api", "key": "token"}
    }
    resolved = {name: e.get("value", "sk-from-the-secret") for name, e in job_env.items()}
    load(monkeypatch, resolved, ("JOB_", "RAG_", "EMBEDDING_", "DATABASE_"))
    rag = RagSettings()
    assert (rag.image_captions, rag.caption_model) == (True, "qwen2.5-vl-7b")
    assert rag.caption_base_url == "http://vllm.models:8000/v1"
    assert rag.caption_api_key is not None
    assert rag.caption_api_key.get_secret_value() == "sk-from-the-secret"


def test_captions_are_off_by_default_and_add_no_rbac() -> None:
    default = render()
    names = {e["name"] for e in operator_env(default)}
    assert not {n for n in names if n.startswith(("JOB_IMAGE", "JOB_CAPTION"))}
    assert rbac_rules(render(sets=CAPTIONS)) == rbac_rules(default)


@pytest.mark.parametrize("missing", ["baseUrl", "model"])
def test_captions_on_without_the_api_or_the_model_fails_to_render(missing: str) -> None:
    sets = [s for s in CAPTIONS if not s.startswith(f"operator.jobs.imageCaptions.{missing}=")]
    proc = helm_template(sets=sets)
    assert proc.returncode != 0
    assert f"operator.jobs.imageCaptions.{missing} is required" in proc.stderr
