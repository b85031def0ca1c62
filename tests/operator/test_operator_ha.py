"""Two operator replicas with kopf peering against the emulator: one works, one stands by.

Each replica is the real entry point (``python -m ragkeeper_operator``) in its own process,
as in the chart's Deployment with ``operator.replicas: 2``: the same ``PEERING_NAME``,
distinct ``PEERING_PRIORITY`` (the chart leaves it unset, so each pod draws a random one) and
a short ``PEERING_LIFETIME_SECONDS``. Each has its own token, so the emulator's request log
tells which replica made a call. The active replica is killed with SIGKILL (no goodbye in the
peering object) while DataSources are being created; the standby must take over once the
dead peer's keep-alive is older than its lifetime, bring every DataSource to Ready, and no
CronJob may exist twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kmock

from ragkeeper_operator import builders
from tests.operator.harness import DS, Cluster, eventually
from tests.operator.test_operator_kopf import NAMESPACE, condition, local_datasource, prepare

PEERINGS = "kopf.dev/v1/clusterkopfpeerings"
PEERING = "ragkeeper-operator"
LIFETIME = 3  # seconds; kopf's keep-alive then comes every second
WRITES = {"POST", "PATCH", "PUT", "DELETE"}
TOTAL = 12
KILL_AFTER = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kubeconfig(k8s: Cluster, token: str) -> Path:
    config = json.loads(k8s.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = token
    path = k8s.kubeconfig.with_name(f"kubeconfig-{token}.json")
    path.write_text(json.dumps(config))
    return path


@contextmanager
def replica(k8s: Cluster, name: str, priority: int) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m ragkeeper_operator`` as one pod of the Deployment would run it."""
    env = {
        **os.environ,
        "KUBECONFIG": str(_kubeconfig(k8s, name)),
        "POD_ID": name,
        "PEERING_NAME": PEERING,
        "PEERING_PRIORITY": str(priority),
        "PEERING_LIFETIME_SECONDS": str(LIFETIME),
        "RAG_IMAGE": "registry.example/ragkeeper-rag:1.0.0",
        "RETRY_INITIAL_DELAY_SECONDS": "0.2",
        "RETRY_MAX_DELAY_SECONDS": "0.5",
        "METRICS_PORT": str(_free_port()),
        "HEALTH_PORT": str(_free_port()),
        "LOG_FORMAT": "text",
    }
    log = k8s.kubeconfig.with_name(f"{name}.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 (our own module, fixed arguments)
        [sys.executable, "-m", "ragkeeper_operator"], env=env, stdout=log, stderr=log
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def calls_by(k8s: Cluster, token: str, methods: set[str] | None = None) -> list[Any]:
    return [
        request
        for request in list(k8s.api)
        if request.headers.get("Authorization") == f"Bearer {token}"
        and (methods is None or request.method.value in methods)
        and "kopfpeerings" not in request.url.path
    ]


def peers(k8s: Cluster) -> dict[str, Any]:
    body = k8s.obj(PEERINGS, "", PEERING) or k8s.obj(PEERINGS, None, PEERING)  # type: ignore[arg-type]
    return dict((body or {}).get("status") or {})


def all_ready(k8s: Cluster, names: list[str]) -> bool:
    for name in names:
        cond = condition(k8s.obj(DS, NAMESPACE, name), "Ready")
        if not cond or cond["status"] != "True":
            return False
    return True


async def test_standby_takes_over_when_the_active_replica_is_killed(k8s: Cluster) -> None:
    k8s.api.resources[PEERINGS] = kmock.ResourceInfo(
        kind="ClusterKopfPeering",
        singular="clusterkopfpeering",
        namespaced=False,
        verbs={"get", "list", "watch", "create", "patch"},
    )
    await prepare(k8s)
    names = [f"team-{i:02d}" for i in range(TOTAL)]
    with replica(k8s, "replica-a", priority=200) as active:
        # The active replica creates the peering object; the standby finds it (409) and joins.
        await eventually(lambda: "replica-a" in peers(k8s), timeout=30)
        with replica(k8s, "replica-b", priority=100):
            await eventually(lambda: "replica-b" in peers(k8s), timeout=30)

            first = names[:KILL_AFTER]
            for name in first:
                await k8s.create_datasource(local_datasource(name))
            await eventually(lambda: all_ready(k8s, first), timeout=30)
            # Only the active replica reconciled; the standby made no write but its keep-alives.
            assert calls_by(k8s, "replica-a", WRITES)
            assert calls_by(k8s, "replica-b", WRITES) == []

            # Kill the active replica while DataSources are being created.
            creating = asyncio.create_task(create_slowly(k8s, names[KILL_AFTER:]))
            await asyncio.sleep(0.05)
            active.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            active.wait(10)

            await eventually(lambda: calls_by(k8s, "replica-b", WRITES), timeout=LIFETIME + 10)
            failover = time.monotonic() - killed_at
            await creating
            await eventually(lambda: all_ready(k8s, names), timeout=LIFETIME + 20)
            ready_after = time.monotonic() - killed_at
            print(f"failover: standby's first write {failover:.2f}s, all Ready {ready_after:.2f}s")
            assert failover <= LIFETIME + 2, failover

            # The standby removed the dead peer from the peering object.
            await eventually(lambda: "replica-a" not in peers(k8s), timeout=LIFETIME + 5)

    # The peering calls are the ones the chart grants (docs/operator.md, High availability):
    # list/watch and create on the collection, patch on the release's object only, no get.
    collection = "/apis/kopf.dev/v1/clusterkopfpeerings"
    peering_calls = {
        (request.method.value, request.url.path)
        for request in list(k8s.api)
        if "kopfpeerings" in request.url.path
    }
    assert peering_calls <= {
        ("GET", collection),
        ("POST", collection),
        ("PATCH", f"{collection}/{PEERING}"),
    }, peering_calls
    assert ("PATCH", f"{collection}/{PEERING}") in peering_calls

    cronjobs = [c["metadata"]["name"] for c in k8s.all("batch/v1/cronjobs", NAMESPACE)]
    assert sorted(cronjobs) == sorted(builders.cronjob_name(name) for name in names)
    for name in names:
        body = k8s.obj(DS, NAMESPACE, name)
        assert body["status"]["cronJobName"] == builders.cronjob_name(name)  # type: ignore[index]


async def create_slowly(k8s: Cluster, names: list[str]) -> None:
    for name in names:
        await k8s.create_datasource(local_datasource(name))
        await asyncio.sleep(0.1)
