"""`make run`'s local stack (scripts/local_stack.py) as a user runs it, then stops it.

It must ingest the examples, serve the agent on 127.0.0.1 (the API and, without a token, the
MCP endpoint), re-ingest idempotently, and leave nothing running when stopped with SIGTERM
(`kill`, `timeout`, a supervisor) — not only Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support import free_port, shared_tmp_dir

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "scripts" / "local_stack.py"


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with shared_tmp_dir("rk-stack") as path:  # postgres runs as another user under root
        yield path


def stack_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "EMBEDDING_"))}
    env["EMBEDDING_PROVIDER"] = "hashing"  # the offline model is covered by its own tests
    return env


def stats_of(output: str) -> dict[str, object]:
    lines = output.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("ingestion exit code"))
    return dict(json.loads(lines[index + 1]))


def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the local stack exited before serving"
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the agent did not become ready")


def mcp_search(base: str, query: str) -> list[dict[str, Any]]:
    """A local MCP client's search_documents call: a JSON-RPC POST to /mcp, without a token."""
    call = {"name": "search_documents", "arguments": {"query": query, "k": 3}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}
    headers = {"Accept": "application/json, text/event-stream"}
    r = httpx.post(base + "/mcp", json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    passages: list[dict[str, Any]] = r.json()["result"]["structuredContent"]["passages"]
    return passages


def test_make_run_serves_the_examples_and_stops_cleanly_on_sigterm(data_dir: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, str(STACK), "--port", str(port), "--data", str(data_dir)],
        env=stack_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    children: list[psutil.Process] = []
    try:
        wait_ready(base, proc)
        hits = httpx.post(base + "/api/search", json={"query": "Kestrel price", "k": 3}).json()
        assert hits and all(h["document_id"].startswith("local/examples:") for h in hits)
        assert [p["document_id"] for p in mcp_search(base, "Kestrel price")] == [
            h["document_id"] for h in hits
        ]
        children += psutil.Process(proc.pid).children(recursive=True)
        assert any("ragkeeper_agent" in " ".join(c.cmdline()) for c in children)
        # pg_ctl daemonises the server: find it by its pid file.
        pid_file = (data_dir / "pgdata" / "postmaster.pid").read_text()
        postmaster = psutil.Process(int(pid_file.splitlines()[0]))
        children.append(postmaster)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # the test failed before stopping it: leave nothing behind
            proc.kill()
            proc.wait()
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    first = stats_of(out)
    assert (first["status"], first["files_added"], first["files_failed"]) == ("success", 7, 0)
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], f"left running after SIGTERM: {alive}"
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()

    again = subprocess.run(
        [sys.executable, str(STACK), "--no-serve", "--data", str(data_dir)],
        env=stack_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    second = stats_of(again.stdout)
    assert (second["files_unchanged"], second["chunks_embedded"]) == (7, 0)
