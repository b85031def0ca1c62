"""The operator scenarios against a real cluster (``make e2e``; KUBECONFIG -> kind/k3d).

The operator runs in-process (the real kopf runtime, as in the emulator tests)
against the cluster ``KUBECONFIG`` points at; the test installs the CRD, works
in a fresh namespace, and drives everything through ``kubectl``. Real
controllers run here, so nothing is played by the test: the CronJob controller
and the Job controller act on what the operator creates. The ingestion image
does not need to work for these scenarios (a purge that fails is released
with a Warning after ``PURGE_TIMEOUT_SECONDS``).

Deselected from ``make test`` by the ``e2e`` marker; skipped with a reason
when no kubeconfig is available.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ragkeeper_operator import builders
from tests.operator.conftest import fast_settings
from tests.operator.harness import running_operator

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "charts" / "ragkeeper" / "crds" / "datasources.ragkeeper.dev.yaml"
KUBECONFIG = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
KUBECTL = shutil.which("kubectl") or str(ROOT / ".tools" / "bin" / "kubectl")


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(  # noqa: S603 - fixed binary, arguments built here
        [KUBECTL, "--kubeconfig", KUBECONFIG, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def apply(document: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps(document))


def get(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    out = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out) if out.strip() else None


def wait_for(probe: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(1)


def ready_status(namespace: str, name: str) -> tuple[str, str] | None:
    body = get("datasource", namespace, name) or {}
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return cond["status"], cond["reason"]
    return None


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    if not Path(KUBECONFIG).is_file():
        pytest.skip(f"no kubeconfig at {KUBECONFIG}: point KUBECONFIG at a kind/k3d cluster")
    kubectl("apply", "--server-side", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/datasources.ragkeeper.dev")
    name = f"ragkeeper-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def datasource(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "ragkeeper.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "type": "local",
            "schedule": "*/30 * * * *",
            "local": {"volume": {"persistentVolumeClaim": {"claimName": "docs"}}},
        },
    }
    body["spec"].update(spec)
    return body


async def test_operator_scenarios_on_a_real_cluster(namespace: str, tmp_path: Path) -> None:
    settings = fast_settings(
        Path(KUBECONFIG),
        watch_namespaces=(namespace,),
        retry_initial_delay_seconds=1,
        retry_max_delay_seconds=5,
        purge_poll_seconds=2,
        purge_timeout_seconds=90,
    )
    async with running_operator(settings):
        # Missing Secret -> Ready=False; it heals once the Secret exists.
        apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "docs", "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "64Mi"}},
                },
            }
        )
        apply(datasource(namespace, "team-docs"))
        assert wait_for(lambda: ready_status(namespace, "team-docs") == ("False", "SecretNotFound"))
        kubectl(
            "create", "secret", "generic", "ragkeeper-database", "-n", namespace,
            "--from-literal=DATABASE_URL=postgresql://nobody@nowhere/none",
        )  # fmt: skip
        wait_for(lambda: ready_status(namespace, "team-docs") == ("True", "CronJobReady"))
        cronjob = get("cronjob", namespace, builders.cronjob_name("team-docs"))
        assert cronjob is not None
        assert cronjob["metadata"]["ownerReferences"][0]["kind"] == "DataSource"

        # Spec change and suspend are patched into the same CronJob.
        kubectl(
            "patch", "datasource", "team-docs", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"schedule": "@hourly", "suspend": True}}),
        )  # fmt: skip
        wait_for(
            lambda: (
                (cj := get("cronjob", namespace, builders.cronjob_name("team-docs")))
                and cj["spec"]["schedule"] == "@hourly"
                and cj["spec"]["suspend"] is True
            )
        )

        # An invalid spec is reported; the operator keeps serving.
        apply(datasource(namespace, "broken", schedule="61 * * * *"))
        wait_for(lambda: ready_status(namespace, "broken") == ("False", "InvalidSchedule"))

        # Sync now -> one Job from the CronJob template (the real Job controller runs it).
        kubectl(
            "annotate", "datasource", "team-docs", "-n", namespace,
            f"{builders.SYNC_REQUEST_ANNOTATION}=2026-01-01T00:00:00Z",
        )  # fmt: skip
        jobs = wait_for(
            lambda: json.loads(
                kubectl(
                    "get", "jobs", "-n", namespace, "-l", builders.MANAGED_SELECTOR, "-o", "json"
                )
            )["items"]
        )
        assert jobs[0]["metadata"]["ownerReferences"][0]["kind"] == "CronJob"

        # Delete with deletionPolicy Delete -> a purge Job, then the finalizer is released.
        kubectl("delete", "datasource", "team-docs", "-n", namespace, "--wait=false")
        wait_for(
            lambda: any(
                "purge" in job["metadata"]["name"]
                for job in json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json"))[
                    "items"
                ]
            )
        )
        wait_for(lambda: get("datasource", namespace, "team-docs") is None, timeout=240)
