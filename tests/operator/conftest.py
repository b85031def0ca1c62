"""Fixtures for the operator: an API emulator on 127.0.0.1 and the real kopf runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ragkeeper_operator.reconcile import Runtime
from ragkeeper_operator.settings import OperatorSettings
from tests.operator.harness import Cluster, cluster, running_operator

NAMESPACE = "docs"


def fast_settings(kubeconfig: Path, **overrides: Any) -> OperatorSettings:
    """Settings with short retry/poll delays so healing is observable in a test."""
    values: dict[str, Any] = {
        "rag_image": "registry.example/ragkeeper-rag:1.0.0",
        "kubeconfig": str(kubeconfig),
        "watch_namespaces": (),
        "database_secret_name": "ragkeeper-database",
        "database_secret_key": "DATABASE_URL",
        "embedding_provider": "openai",
        "embedding_model_choice": "text-embedding-3-small",
        "embedding_api_key_secret_name": None,
        "retry_initial_delay_seconds": 0.2,
        "retry_max_delay_seconds": 0.5,
        "purge_poll_seconds": 0.1,
        "purge_timeout_seconds": 30,
    }
    values.update(overrides)
    return OperatorSettings(**values)


@pytest.fixture
async def k8s(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path) as api:
        yield api


@pytest.fixture
async def operator(k8s: Cluster) -> AsyncIterator[Runtime]:
    async with running_operator(fast_settings(k8s.kubeconfig)) as runtime:
        yield runtime
