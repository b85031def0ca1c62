"""manifests/ (the plain `kubectl apply -k` install) is exactly what the chart renders.

`make manifests` regenerates it; this test renders into a temporary directory with the same
script and fails on any difference, then checks the result is a valid kustomization of valid
objects.
"""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import kubernetes_validate
import yaml

from tests.chart.tools import CHART, ROOT, TOOLS_BIN, run, tool

MANIFESTS = ROOT / "manifests"
GENERATED = ["namespace.yaml", "ragkeeper.yaml", "migration-job.yaml", "kustomization.yaml"]


def _render(out: Path) -> None:
    env = {
        **os.environ,
        "HELM": tool("helm"),
        "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ['PATH']}",
    }
    run(["bash", str(ROOT / "scripts" / "render-manifests.sh"), str(out)], env=env)


def test_manifests_match_the_chart(tmp_path: Path) -> None:
    _render(tmp_path)
    for name in GENERATED:
        assert filecmp.cmp(tmp_path / name, MANIFESTS / name, shallow=False), (
            f"manifests/{name} drifted from the chart: run `make manifests`"
        )
    crds = sorted(p.name for p in (tmp_path / "crds").glob("*.yaml"))
    assert crds == sorted(p.name for p in (MANIFESTS / "crds").glob("*.yaml"))
    assert crds == sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    for name in crds:
        assert filecmp.cmp(tmp_path / "crds" / name, MANIFESTS / "crds" / name, shallow=False)


def test_kustomization_builds_valid_objects() -> None:
    proc = run([tool("kubectl"), "kustomize", str(MANIFESTS)])
    objects = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    kinds = {obj["kind"] for obj in objects}
    assert {"Namespace", "CustomResourceDefinition", "ClusterRole", "Deployment"} <= kinds
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
        if obj["kind"] not in {"Namespace", "CustomResourceDefinition", "ClusterRole"} and not obj[
            "kind"
        ].startswith("ClusterRole"):
            assert obj["metadata"]["namespace"] == "ragkeeper", obj["metadata"]["name"]


def test_manifests_use_an_existing_database_secret() -> None:
    text = (MANIFESTS / "ragkeeper.yaml").read_text()
    assert "kind: StatefulSet" not in text, "no bundled database (and no generated password)"
    assert "name: ragkeeper-database" in text
    assert "helm.sh/hook" not in text, "the migration Job lives in migration-job.yaml"
    assert "helm.sh/hook" in (MANIFESTS / "migration-job.yaml").read_text()
