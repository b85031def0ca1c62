"""The ingestion Job's pod, as the operator writes it, syncs 2,000 files inside its memory limit.

The pod spec comes from the operator's own builder with its default settings, so the memory
limit is the default ``JOB_MEMORY_LIMIT``; ``podrunner`` hands it to podman as ``--memory``, so
an out-of-memory kill (exit 137) fails this test rather than a user's DataSource.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragkeeper_operator import builders
from ragkeeper_operator.settings import OperatorSettings
from ragkeeper_operator.spec import parse_spec
from tests.images_tier.conftest import image
from tests.images_tier.podrunner import Objects, Pod, PodRunner, translate
from tests.rag.corpus import write_mixed_corpus

pytestmark = pytest.mark.images

FILES = 2000
SPEC = {
    "type": "local",
    "schedule": "*/15 * * * *",
    "local": {"path": "/data/corpus", "volume": {"persistentVolumeClaim": {"claimName": "corpus"}}},
}


def job_pod_spec(settings: OperatorSettings) -> dict[str, Any]:
    body = {
        "apiVersion": "ragkeeper.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {
            "name": "big",
            "namespace": "docs",
            "uid": "7d3c1f2e-0000-4000-8000-000000000001",
        },
        "spec": SPEC,
    }
    cronjob = builders.build_cronjob(body, parse_spec(SPEC), settings)
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


@pytest.mark.timeout(1500)  # about 6,000 chunks through the offline model on 2 vCPUs
def test_default_job_pod_syncs_2000_files_within_its_memory_limit(
    podman: PodRunner, database_url: str, shared_dir: Path
) -> None:
    corpus = shared_dir / "corpus"
    write_mixed_corpus(corpus, FILES)
    for path in [corpus, *corpus.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    settings = OperatorSettings(rag_image=image("rag"))
    pod_spec = job_pod_spec(settings)
    limit = pod_spec["containers"][0]["resources"]["limits"]["memory"]
    assert limit == OperatorSettings().job_memory_limit == "1Gi"

    objects = Objects(claims={"corpus": corpus})
    objects.add_secret(settings.database_secret_name, {settings.database_secret_key: database_url})
    run = translate(pod_spec, Pod("big-sync", "docs", shared_dir / "pod"), objects)
    assert run.options[run.options.index("--memory") + 1] == str(1024**3)

    finished = podman.run_to_completion(run, timeout=1200)
    assert finished.exit_code == 0, (
        f"exit {finished.exit_code} (137 = killed at the {limit} limit)\n{finished.stderr[-3000:]}"
    )
    stats = json.loads(finished.message)
    assert (stats["files_seen"], stats["files_added"], stats["files_failed"]) == (FILES, FILES, 0)
    print(f"2,000-file sync in the rag image under {limit}: {finished.duration:.0f} s")
