"""Project-level contracts: layering, the Makefile targets and the README's promises."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "ragkeeper-knowledge": ROOT / "services" / "knowledge",
    "ragkeeper-rag": ROOT / "services" / "rag",
    "ragkeeper-agent": ROOT / "services" / "agent",
    "ragkeeper-operator": ROOT / "operator",
}


def test_import_layering_contracts_hold() -> None:
    """agent -> knowledge, rag -> knowledge, operator independent (.importlinter)."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint_imports), "--config", str(ROOT / ".importlinter")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_makefile_has_the_documented_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in (
        "help",
        "setup",
        "run",
        "test",
        "lint",
        "bench",
        "chart",
        "manifests",
        "images",
        "e2e",
    ):
        assert re.search(rf"^{target}:.*## ", makefile, re.M), (
            f"make {target} missing or undocumented"
        )


def test_readme_gives_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_one_version_for_the_four_packages_the_chart_and_the_agent() -> None:
    """pyproject.toml holds the number; the metadata, the agent and Chart.yaml's appVersion agree."""
    declared = {
        name: tomllib.loads((path / "pyproject.toml").read_text())["project"]["version"]
        for name, path in PACKAGES.items()
    }
    installed = {name: metadata.version(name) for name in PACKAGES}
    assert installed == declared, "the venv is stale: re-run `make setup`"
    assert len(set(installed.values())) == 1, installed
    (version,) = set(installed.values())
    chart = yaml.safe_load((ROOT / "charts" / "ragkeeper" / "Chart.yaml").read_text())
    assert chart["appVersion"] == version

    import ragkeeper_agent

    assert ragkeeper_agent.__version__ == version


MAX_FUNCTION_LINES = 60
SOURCES = [path / "src" for path in PACKAGES.values()]


def _long_functions(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    return found


def test_no_function_in_the_packages_is_longer_than_a_reader_can_hold() -> None:
    """Ruff caps complexity and statements; this caps length (docstring included)."""
    too_long = [entry for root in SOURCES for entry in _long_functions(root)]
    assert too_long == [], f"split these (over {MAX_FUNCTION_LINES} lines): {too_long}"
