"""ESLint over the chat page's own JavaScript (static/js), with the repository's flat config.

ESLint is pinned by package.json/package-lock.json and installed into node_modules/ by
``scripts/install-tools.sh`` (the first step of ``make test``); ``make lint`` runs it too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ESLINT = ROOT / "node_modules" / ".bin" / "eslint"
STATIC = ROOT / "services" / "agent" / "src" / "ragkeeper_agent" / "static"


def eslint(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert ESLINT.is_file(), "ESLint is not installed: run `make setup` (scripts/install-tools.sh)"
    return subprocess.run(  # noqa: S603 - our pinned eslint, our own files
        [str(ESLINT), *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_page_javascript_passes_eslint() -> None:
    proc = eslint("--max-warnings", "0", "--format", "json", str(STATIC / "js"))
    results = json.loads(proc.stdout)
    problems = [
        f"{Path(r['filePath']).name}:{m.get('line')}:{m.get('column')} {m.get('ruleId')} {m['message']}"
        for r in results
        for m in r["messages"]
    ]
    assert proc.returncode == 0, "\n".join(problems) or proc.stderr
    linted = {Path(r["filePath"]) for r in results}
    assert linted == set((STATIC / "js").glob("*.js")), "a static/js file was not linted"


def test_the_config_catches_mistakes_and_skips_vendored_files() -> None:
    """The recommended rules and browser globals apply to static/js; static/vendor is ignored."""
    source = "const unused = 1;\nundeclared();\ndocument.title = window.location.host;\n"
    ours = eslint("--stdin", "--stdin-filename", str(STATIC / "js" / "probe.js"), stdin=source)
    assert ours.returncode == 1, ours.stdout + ours.stderr
    assert "no-unused-vars" in ours.stdout and "no-undef" in ours.stdout
    assert "document" not in ours.stdout and "window" not in ours.stdout
    vendored = eslint(
        "--stdin", "--stdin-filename", str(STATIC / "vendor" / "probe.js"), stdin=source
    )
    assert vendored.returncode == 0 and "ignore pattern" in vendored.stdout, vendored.stdout
