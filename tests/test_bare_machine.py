"""The README's two commands on a machine that has only python3, make, git and root.

A copy of the repository, run with a PATH that holds no ``uv`` and with no ``.tools/``,
must install its pinned uv into its own ``.tools/`` and serve the chat with ``make run``.
Without root (and without sudo), ``scripts/install-tools.sh`` — the first step of ``make
test`` — must stop before anything else with one line naming the Debian packages to install.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, shared_tmp_dir

ROOT = Path(__file__).resolve().parent.parent
PINNED_UV = re.search(
    r'UV_VERSION="\$\{UV_VERSION:-([0-9.]+)\}"', (ROOT / "scripts" / "ensure-uv.sh").read_text()
)


def _path_without_uv() -> str:
    """The current PATH less every directory that holds a ``uv`` (and the repo's own tools)."""
    keep = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if not entry or Path(entry, "uv").exists() or ".tools" in Path(entry).parts:
            continue
        if Path(entry).resolve() == (ROOT / ".venv" / "bin").resolve():
            continue
        keep.append(entry)
    return os.pathsep.join(keep)


def _copy_of_the_repository(target: Path) -> None:
    """The files a clone would have: tracked and not-ignored ones, as they are in the tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = ROOT / raw.decode()
        if not source.is_file():  # deleted in the tree but still in the index
            continue
        dest = target / raw.decode()
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)


@pytest.fixture
def bare_clone() -> Iterator[Path]:
    with shared_tmp_dir("rk-bare") as path:  # postgres runs as another user under root
        _copy_of_the_repository(path)
        assert not (path / ".tools").exists() and not (path / ".venv").exists()
        yield path


def _bare_env() -> dict[str, str]:
    drop = ("VIRTUAL_ENV", "UV_", "RAG_", "EMBEDDING_", "PYTEST", "COV_", "COVERAGE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = _path_without_uv()
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    env.pop("MAKELEVEL", None)
    return env


@pytest.mark.slow
def test_make_run_on_a_bare_clone_installs_uv_and_serves_the_chat(bare_clone: Path) -> None:
    env = _bare_env()
    assert shutil.which("uv", path=env["PATH"]) is None
    port = free_port()
    data = bare_clone / ".local" / "bare-data"
    log = bare_clone / "make-run.log"
    with log.open("wb") as out:  # a file, not a pipe nobody reads while the stack runs
        proc = subprocess.Popen(
            ["make", "run", f"RUN_ARGS=--port {port} --data {data}"],
            cwd=bare_clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # make, uv, the stack and the agent: one group to stop
        )
    try:
        deadline = time.monotonic() + 420
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).is_success
            if healthy:
                break
            time.sleep(0.5)
        assert healthy, "make run never served /healthz:\n" + log.read_text()[-4000:]
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    uv = bare_clone / ".tools" / "bin" / "uv"
    assert uv.is_file(), "uv was not installed into the clone's .tools/"
    version = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout
    assert PINNED_UV is not None and f"uv {PINNED_UV.group(1)}" in version
    assert not (data / "pgdata" / "postmaster.pid").exists(), "Postgres left running"
    assert "installing uv" in log.read_text()


def test_install_tools_without_root_names_the_missing_packages_in_one_line() -> None:
    with shared_tmp_dir("rk-nonroot") as tmp_path:  # the script must be reachable by uid 65534
        _install_tools_as_nobody(tmp_path)


def _install_tools_as_nobody(tmp_path: Path) -> None:
    # A PATH with a shell and coreutils only: no chromium, no promtool, no sudo.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "mkdir", "id", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "install-tools.sh", repo / "scripts")
    for path in (tmp_path, bin_dir, repo, repo / "scripts"):
        path.chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir(mode=0o777)
    tools.chmod(0o777)
    result = subprocess.run(
        [
            shutil.which("setpriv") or "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            str(bin_dir / "bash"),
            str(repo / "scripts" / "install-tools.sh"),
        ],
        env={"PATH": str(bin_dir), "TOOLS_DIR": str(tools), "HOME": str(tools)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert (
        "chromium" in lines[0] and "prometheus" in lines[0] and "sudo apt-get install" in lines[0]
    )
    assert "tesseract-ocr tesseract-ocr-eng" in lines[0]
    assert list((tools / "bin").iterdir()) == []  # stopped before installing anything
