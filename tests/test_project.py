"""Project-level contracts: layering, the Makefile targets and the README's promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
