"""Locate and run the real binaries the chart tests use (helm, promtool, checkov, hadolint).

The binaries come from `scripts/install-tools.sh` (`make setup`), which puts them on PATH or in
`.tools/bin`. A missing tool fails the test with the command to run: these checks are part of
the suite, never silently skipped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ragkeeper"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
TOOLS_BIN = ROOT / ".tools" / "bin"
NAMESPACE = "ragkeeper"
RELEASE = "ragkeeper"


class ToolMissingError(RuntimeError):
    """A binary the suite needs is not installed."""


def tool(name: str) -> str:
    """Path of a tool: .tools/bin first (pinned by install-tools.sh), then PATH."""
    local = TOOLS_BIN / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise ToolMissingError(f"{name} not found: run `bash scripts/install-tools.sh`")
    return found


def run(args: list[str], *, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    if check and proc.returncode != 0:
        output = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{output}")
    return proc


def helm_template(
    *values: Path, sets: list[str] | None = None, extra: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    args = [tool("helm"), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["-f", str(path)]
    for item in sets or []:
        args += ["--set", item]
    return run(args + (extra or []), check=False)


def render(*values: Path, sets: list[str] | None = None) -> list[dict[str, Any]]:
    """Render the chart (hooks included) and return its objects."""
    proc = helm_template(*values, sets=sets)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    matches = [obj for obj in by_kind(objects, kind) if obj["metadata"]["name"].endswith(suffix)]
    assert len(matches) == 1, f"expected one {kind} *{suffix}, got {len(matches)}"
    return matches[0]


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload object."""
    specs = []
    for obj in objects:
        spec = obj.get("spec", {})
        if obj["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
            specs.append((f"{obj['kind']}/{obj['metadata']['name']}", spec["template"]["spec"]))
        elif obj["kind"] == "CronJob":
            specs.append(
                (
                    f"CronJob/{obj['metadata']['name']}",
                    spec["jobTemplate"]["spec"]["template"]["spec"],
                )
            )
    return specs
