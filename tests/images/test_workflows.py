"""The GitHub workflows are valid, least-privilege, and pin every action by commit SHA.

Validated offline against the workflow schema bundled with check-jsonschema; the policy checks
(pinning, permissions, the jobs the release promises, what fails a scan) are read from the
parsed YAML. Secret scanning (scripts/secret-scan.sh, run by `make lint` and so by CI's lint
job) is checked with the real detect-secrets: the committed baseline is fully reviewed, and a
planted key in a temporary repository fails the scan.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.tools import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
DETECT_SECRETS_HOOK = Path(sys.executable).parent / "detect-secrets-hook"
SECRET_SCAN = ROOT / "scripts" / "secret-scan.sh"
BASELINE = ROOT / ".secrets.baseline"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v?\d+\.\d+(\.\d+)?\s*$")


def _load(path: Path) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the `on:` key as True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_the_promised_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "images.yml", "security.yml", "release.yml"}


@pytest.mark.parametrize(
    ("schema", "paths"),
    [
        ("vendor.github-workflows", WORKFLOWS),
        ("vendor.dependabot", [ROOT / ".github" / "dependabot.yml"]),
    ],
    ids=["workflows", "dependabot"],
)
def test_files_match_the_official_schema(schema: str, paths: list[Path]) -> None:
    proc = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", schema, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha(path: Path) -> None:
    lines = path.read_text().splitlines()
    uses = [line for line in lines if re.match(r"^\s*(-\s+)?uses:", line)]
    assert uses
    for line in uses:
        ref = line.split("uses:", 1)[1].split("#", 1)[0].strip()
        if ref.startswith("./"):
            continue  # a workflow of this repository
        assert PINNED.match(ref), f"{path.name}: {ref} is not pinned by a full commit SHA"
        assert VERSION_COMMENT.search(line), f"{path.name}: {ref} lacks its version comment"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_least_privilege(path: Path) -> None:
    workflow = _load(path)
    assert workflow["permissions"] == {"contents": "read"}, "read-only by default"
    for name, job in workflow["jobs"].items():
        granted = job.get("permissions", {})
        assert granted != "write-all", name
        writes = {scope for scope, level in granted.items() if level == "write"}
        allowed = {"packages", "id-token", "attestations", "contents"}
        assert writes <= allowed, f"{path.name}:{name} asks for {writes - allowed}"
        if "contents" in writes:
            assert path.name == "release.yml", "only the release writes to the repository"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_checkouts_do_not_persist_credentials(path: Path) -> None:
    for step in _steps(_load(path)):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


def test_ci_runs_the_make_targets_on_a_python_matrix() -> None:
    ci = _load(ROOT / ".github" / "workflows" / "ci.yml")
    assert set(ci["on"]) >= {"pull_request", "push"}
    runs = " ".join(step.get("run", "") for step in _steps(ci))
    for target in ("make lint", "make test", "make chart", "make manifests"):
        assert target in runs
    assert len(ci["jobs"]["test"]["strategy"]["matrix"]["python"]) >= 2
    caches = [s for s in _steps(ci) if s.get("with", {}).get("enable-cache") is True]
    assert caches, "the uv cache is kept between runs"


def test_images_are_multi_arch_scanned_and_attested() -> None:
    images = _load(ROOT / ".github" / "workflows" / "images.yml")
    steps = _steps(images)
    pushes = [s for s in steps if s.get("with", {}).get("push") is True]
    assert len(pushes) == 1
    push = pushes[0]["with"]
    assert push["platforms"] == "linux/amd64,linux/arm64"
    assert push["sbom"] is True and push["provenance"] == "mode=max"
    assert any(s.get("uses", "").startswith("aquasecurity/trivy-action@") for s in steps)
    assert any(s.get("uses", "").startswith("actions/attest-build-provenance@") for s in steps)
    dockerfiles = {
        entry["dockerfile"] for entry in images["jobs"]["image"]["strategy"]["matrix"]["include"]
    }
    assert dockerfiles == {
        "services/agent/Dockerfile",
        "services/rag/Dockerfile",
        "operator/Dockerfile",
    }


def test_every_trivy_scan_fails_on_fixable_high_and_critical_findings() -> None:
    scans = [
        (path.name, step)
        for path in WORKFLOWS
        for step in _steps(_load(path))
        if step.get("uses", "").startswith("aquasecurity/trivy-action@")
    ]
    assert scans, "the images are scanned"
    for name, step in scans:
        options = step["with"]
        severities = {s.strip() for s in str(options["severity"]).split(",")}
        assert severities == {"CRITICAL", "HIGH"}, f"{name}: {step.get('name')}"
        assert options["ignore-unfixed"] is True, f"{name}: only findings with a fix fail"
        assert str(options["exit-code"]) == "1", f"{name}: a finding fails the job"


def test_secret_scanning_runs_in_make_lint_and_ci() -> None:
    assert "scripts/secret-scan.sh" in (ROOT / "scripts" / "lint-extra.sh").read_text()
    ci = _load(ROOT / ".github" / "workflows" / "ci.yml")
    lint_runs = [step.get("run", "") for step in ci["jobs"]["lint"]["steps"]]
    assert "make lint" in lint_runs
    syncs = [run for run in lint_runs if run.startswith("uv sync")]
    assert syncs and all("--no-group dev" not in run for run in syncs), "detect-secrets is dev"


def test_the_secrets_baseline_is_committed_and_every_finding_reviewed() -> None:
    baseline = json.loads(BASELINE.read_text())
    plugins = {plugin["name"] for plugin in baseline["plugins_used"]}
    # the detectors that matter stay on: a baseline cannot pass by switching them off
    assert plugins >= {
        "AWSKeyDetector",
        "PrivateKeyDetector",
        "KeywordDetector",
        "BasicAuthDetector",
        "JwtTokenDetector",
        "GitHubTokenDetector",
        "OpenAIDetector",
        "Base64HighEntropyString",
        "HexHighEntropyString",
    }
    results = [(path, r) for path, found in baseline["results"].items() for r in found]
    assert results
    unreviewed = [
        f"{p}:{r['line_number']} {r['type']}" for p, r in results if r.get("is_secret") is not False
    ]
    assert not unreviewed, f"audit these (detect-secrets audit .secrets.baseline): {unreviewed}"
    assert all(not Path(path).is_absolute() for path, _ in results)


def _scan(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SECRET_SCAN), str(tree)],
        env={**os.environ, "DETECT_SECRETS_HOOK": str(DETECT_SECRETS_HOOK)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_secret_scan_fails_on_a_planted_aws_key(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    shutil.copy(BASELINE, tmp_path / ".secrets.baseline")
    (tmp_path / "notes.md").write_text("Nothing secret here.\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True, timeout=30)
    clean = _scan(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    key = "AKIA" + "ZQ4R7TX2WM9KP3VB"  # split so this file itself is not a finding
    (tmp_path / "deploy.env").write_text(f"AWS_ACCESS_KEY_ID={key}\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "deploy.env"], check=True, timeout=30)
    found = _scan(tmp_path)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "AWS Access Key" in found.stdout and "deploy.env" in found.stdout
    assert (tmp_path / ".secrets.baseline").read_bytes() == BASELINE.read_bytes()


def test_release_publishes_the_chart_after_the_images_of_the_same_version() -> None:
    release = _load(ROOT / ".github" / "workflows" / "release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["jobs"]["images"]["uses"] == "./.github/workflows/images.yml"
    assert release["jobs"]["images"]["with"]["push"] is True
    assert set(release["jobs"]["chart"]["needs"]) == {"check", "images"}
    runs = " ".join(step.get("run", "") for step in _steps(release))
    assert "helm package" in runs and "helm push" in runs


def test_security_workflow_is_weekly_and_audits_dependencies() -> None:
    security = _load(ROOT / ".github" / "workflows" / "security.yml")
    assert security["on"]["schedule"]
    runs = " ".join(step.get("run", "") for step in _steps(security))
    for tool in ("pip-audit", "bandit", "test_checkov.py"):
        assert tool in runs


def test_dependabot_watches_uv_actions_and_every_dockerfile() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(ecosystems) == {"uv", "github-actions", "docker"}
    watched = {d.strip("/") for d in ecosystems["docker"]["directories"]}
    assert watched == {"services/agent", "services/rag", "operator"}
    for directory in watched:
        assert (ROOT / directory / "Dockerfile").is_file()
