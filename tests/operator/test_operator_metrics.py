"""Metrics exposition (checked by promtool) and settings from the environment."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ragkeeper_operator.metrics import OperatorMetrics
from ragkeeper_operator.settings import OperatorSettings


def populated() -> OperatorMetrics:
    metrics = OperatorMetrics()
    with metrics.reconciling():
        metrics.reconciliations.labels(result="success").inc()
    metrics.set_ready("docs", "team-docs", True)
    metrics.set_ready("docs", "handbook", False)
    metrics.last_success.labels(namespace="docs", datasource="team-docs").set(1767261600)
    metrics.documents.labels(namespace="docs", datasource="team-docs").set(12)
    metrics.files_failed.labels(namespace="docs", datasource="team-docs").set(2)
    metrics.runs.labels(reason="CompletedWithErrors").inc()
    metrics.run_duration.labels(reason="CompletedWithErrors").observe(95.0)
    return metrics


def test_promtool_accepts_the_exposition() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes from Debian's prometheus package"
    text = populated().render()
    result = subprocess.run(  # noqa: S603 - fixed binary, our own input
        [promtool, "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"ragkeeper_operator_reconciliations_total" in text
    assert b"ragkeeper_operator_reconcile_duration_seconds_bucket" in text
    assert b"ragkeeper_operator_run_duration_seconds_bucket" in text
    # The process's CPU and memory, under the standard names (no database pool to report).
    assert b"\nprocess_cpu_seconds_total " in text
    assert b"\nprocess_resident_memory_bytes " in text


def test_readiness_counts_and_forget() -> None:
    metrics = populated()
    assert metrics.datasources.labels(ready="true")._value.get() == 1
    assert metrics.datasources.labels(ready="false")._value.get() == 1

    # Flips and repeats move the counts by what changed (they are kept, not recounted).
    metrics.set_ready("docs", "handbook", True)
    metrics.set_ready("docs", "handbook", True)
    assert metrics.datasources.labels(ready="true")._value.get() == 2
    metrics.set_ready("docs", "handbook", False)
    assert metrics.datasources.labels(ready="false")._value.get() == 1

    metrics.forget("docs", "team-docs")
    metrics.forget("docs", "never-seen")

    text = metrics.render().decode()
    assert 'datasource="team-docs"' not in text
    assert metrics.datasources.labels(ready="true")._value.get() == 0
    assert metrics.datasources.labels(ready="false")._value.get() == 1


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCH_NAMESPACES", "team-a, team-b,,")
    monkeypatch.setenv("RAG_IMAGE", "registry.example/rag:2")
    monkeypatch.setenv("DATABASE_SECRET_NAME", "pg")
    monkeypatch.setenv("EMBEDDING_API_KEY_SECRET_NAME", "openai")
    monkeypatch.setenv("METRICS_PORT", "9191")

    settings = OperatorSettings()

    assert settings.watch_namespaces == ("team-a", "team-b")
    assert not settings.clusterwide
    assert (settings.rag_image, settings.database_secret_name) == ("registry.example/rag:2", "pg")
    assert settings.embedding_api_key_secret_name == "openai"
    assert settings.metrics_port == 9191
    assert settings.retry_delay(0) == 10 and settings.retry_delay(10) == 300


def test_settings_reject_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_SECRET_NAME", "Not_A_Name")
    with pytest.raises(ValueError, match="database_secret_name|DATABASE_SECRET_NAME"):
        OperatorSettings()
