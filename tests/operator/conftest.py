"""Fixtures for the operator: an API emulator on 127.0.0.1 and the real kopf runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from ragkeeper_operator.reconcile import Runtime
from ragkeeper_operator.settings import OperatorSettings
from tests.operator.harness import Cluster, cluster, running_operator
from tests.operator.rbac import assert_allowed, mode_of, operator_calls

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


@asynccontextmanager
async def operator_within_rbac(k8s: Cluster, settings: OperatorSettings) -> AsyncIterator[Runtime]:
    """The operator running; once it stops, every call it made must be one the chart allows.

    The chart's RBAC is rendered in the mode ``settings.watch_namespaces`` selects; a call
    those rules do not allow fails the block, naming the call and the rules.
    """
    async with running_operator(settings) as runtime:
        yield runtime
    assert_allowed(operator_calls(k8s.api.log), mode_of(settings.watch_namespaces))


@pytest.fixture
async def operator(k8s: Cluster) -> AsyncIterator[Runtime]:
    async with operator_within_rbac(k8s, fast_settings(k8s.kubeconfig)) as runtime:
        yield runtime
