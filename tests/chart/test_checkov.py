"""checkov (Kubernetes and Helm frameworks, offline) finds nothing beyond the documented skips.

Global skips and their reasons live in charts/ragkeeper/.checkov.yaml; per-object exceptions
are `checkov.io/skipN` annotations on the object. This test pins both lists, so a new finding
or a new skip is a visible change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from tests.chart.tools import CHART, CI_VALUES, TOOLS_BIN, helm_template, run, tool

CONFIG = CHART / ".checkov.yaml"
GLOBAL_SKIPS = {"CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_21"}
# (check, object) pairs skipped by annotation, each with its reason next to it in the template.
ANNOTATED_SKIPS = {
    ("CKV_K8S_9", "Deployment.ragkeeper.ragkeeper-operator"),
    ("CKV_K8S_38", "Deployment.ragkeeper.ragkeeper-operator"),
    ("CKV_K8S_40", "StatefulSet.ragkeeper.ragkeeper-database"),
}


def _checkov(*args: str) -> list[dict[str, Any]]:
    env = {**os.environ, "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = run(
        [tool("checkov"), "--config-file", str(CONFIG), "-o", "json", *args],
        check=False,
        env=env,
    )
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    return report if isinstance(report, list) else [report]


def _failures_and_skips(reports: list[dict[str, Any]]) -> tuple[list[str], set[tuple[str, str]]]:
    failed, skipped = [], set()
    for report in reports:
        results = report.get("results", {})
        for check in results.get("failed_checks", []):
            failed.append(f"{check['check_id']} {check['resource']} ({check['file_path']})")
        for check in results.get("skipped_checks", []):
            resource = check["resource"].replace("ragkeeper.t-", "ragkeeper.")
            skipped.add((check["check_id"], resource))
    return failed, skipped


def test_skip_list_is_the_documented_one() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert set(config["skip-check"]) == GLOBAL_SKIPS
    assert config["skip-download"] is True
    text = CONFIG.read_text()
    for check in GLOBAL_SKIPS:
        comment = text.split(f"- {check}")[0].rstrip().splitlines()[-1]
        assert comment.strip().startswith("#"), f"{check} has no justification above it"


def test_rendered_scenarios_have_no_findings(tmp_path: Path) -> None:
    for values in CI_VALUES:
        proc = helm_template(values)
        assert proc.returncode == 0, proc.stderr
        (tmp_path / f"{values.stem}.yaml").write_text(proc.stdout)
    failed, skipped = _failures_and_skips(
        _checkov("-d", str(tmp_path), "--framework", "kubernetes")
    )
    assert failed == []
    assert skipped == ANNOTATED_SKIPS


def test_chart_has_no_findings_with_the_helm_framework() -> None:
    failed, skipped = _failures_and_skips(_checkov("-d", str(CHART), "--framework", "helm"))
    assert failed == []
    assert {check for check, _ in skipped} == {check for check, _ in ANNOTATED_SKIPS}
