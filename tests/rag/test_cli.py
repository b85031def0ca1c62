"""The ingestion job as Kubernetes runs it: a process, env vars, exit codes, stats JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import psutil

from ragkeeper_rag.workers import POOL_MIN_FILES

from ..conftest import create_database
from .corpus import write_mixed_corpus

# The stats JSON's keys every run reports (docs/architecture.md, ingestion job contract).
STATS_KEYS = (
    "pipeline_id",
    "pipeline_type",
    "run_mode",
    "status",
    "files_seen",
    "files_added",
    "files_updated",
    "files_deleted",
    "files_unchanged",
    "files_failed",
    "chunks_embedded",
    "chunks_reused",
    "errors",
    "duration",
)


def job_env(database_url: str | None, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "EMBEDDING_", "GOOGLE_"))
    }
    env.pop("DATABASE_URL", None)
    env.pop("RUN_MODE", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    env["EMBEDDING_PROVIDER"] = "hashing"
    env["RAG_TERMINATION_LOG"] = str(tmp_path / "termination-log")
    env.update(extra)
    return env


def one_file_env(
    database_url: str, tmp_path: Path, pipeline_id: str, **extra: str
) -> dict[str, str]:
    """Job env for a local folder ``tmp_path/d`` holding one small Markdown file."""
    folder = tmp_path / "d"
    folder.mkdir(exist_ok=True)
    (folder / "x.md").write_text("# X\n\ntext")
    return job_env(
        database_url,
        tmp_path,
        RAG_PIPELINE_ID=pipeline_id,
        RAG_WATCH_DIRECTORY=str(folder),
        **extra,
    )


def run_job(env: dict[str, str], *args: str, timeout: float = 240) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "ragkeeper_rag", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    last = proc.stdout.strip().splitlines()[-1]
    return proc.returncode, json.loads(last), proc.stderr


async def table_snapshot(url: str, pipeline_id: str) -> dict[str, list[tuple]]:
    conn = await asyncpg.connect(url)
    try:
        return {
            "docs": [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT source_id, content_hash, version FROM document_metadata WHERE pipeline_id=$1 ORDER BY 1",
                    pipeline_id,
                )
            ],
            "chunks": [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT document_id, chunk_index, content_hash FROM documents WHERE pipeline_id=$1 ORDER BY 1, 2",
                    pipeline_id,
                )
            ],
            "rows": [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT dataset_id, sheet, row_number, row_data::text FROM document_rows ORDER BY 1, 2, 3"
                )
            ],
        }
    finally:
        await conn.close()


async def test_single_run_prints_stats_and_writes_termination_log(
    database_url: str, tmp_path: Path
) -> None:
    write_mixed_corpus(tmp_path / "docs", 14)
    (tmp_path / "docs" / "broken.pdf").write_bytes(b"%PDF-1.7 garbage")
    env = job_env(
        database_url, tmp_path, RAG_PIPELINE_ID="ns/cli", RAG_WATCH_DIRECTORY=str(tmp_path / "docs")
    )
    code, stats, stderr = run_job(env)
    assert code == 0, stderr
    for key in STATS_KEYS:
        assert key in stats
    assert (stats["pipeline_id"], stats["run_mode"], stats["status"]) == (
        "ns/cli",
        "single",
        "partial",
    )
    assert stats["files_added"] == 14 and stats["files_failed"] == 1
    assert stats["errors"][0]["file"] == "broken.pdf"
    assert json.loads((tmp_path / "termination-log").read_text()) == stats
    for line in stderr.strip().splitlines():  # logs are JSON lines on stderr
        assert isinstance(json.loads(line), dict)

    code, again, _ = run_job(env)
    assert code == 0 and again["chunks_embedded"] == 0 and again["files_unchanged"] == 14


async def test_many_failed_files_still_leave_a_termination_log_that_parses(
    database_url: str, tmp_path: Path
) -> None:
    """Kubernetes keeps 4096 bytes: the message is cut to whole JSON, counts intact."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(120):
        name = f"broken-{i:03d}-" + "é" * 60 + ".pdf"  # long, non-ASCII names: bytes count
        (docs / name).write_bytes(b"%PDF-1.7 garbage")
    (docs / "fine.md").write_text("# Fine\n\nThis one parses.\n")
    env = job_env(
        database_url, tmp_path, RAG_PIPELINE_ID="ns/many-bad", RAG_WATCH_DIRECTORY=str(docs)
    )
    code, stats, stderr = run_job(env)
    assert code == 0, stderr
    assert (stats["files_failed"], stats["files_added"], len(stats["errors"])) == (120, 1, 120)
    raw = (tmp_path / "termination-log").read_bytes()
    assert len(raw) <= 4000
    message = json.loads(raw)
    assert message["errors_truncated"] is True
    assert 0 < len(message["errors"]) < 120
    originals = {e["file"]: e["error"] for e in stats["errors"]}
    for kept in message["errors"]:  # the first errors, each message at most cut short
        assert originals[kept["file"]].startswith(kept["error"]) and kept["error"]
    counts = {k: v for k, v in stats.items() if k.startswith(("files_", "chunks_"))}
    assert {k: message[k] for k in counts} == counts
    assert message["status"] == "partial"


def test_termination_message_of_small_stats_is_the_stats_line() -> None:
    from ragkeeper_rag.cli import termination_message

    stats = {"pipeline_id": "a/b", "status": "success", "errors": [], "files_seen": 3}
    assert json.loads(termination_message(stats)) == stats


def test_termination_message_cuts_a_huge_single_error() -> None:
    from ragkeeper_rag.cli import TERMINATION_MESSAGE_BYTES, termination_message

    stats = {"pipeline_id": "a/b", "status": "failed", "error": "x" * 10_000, "errors": []}
    message = termination_message(stats)
    assert len(message.encode()) <= TERMINATION_MESSAGE_BYTES
    parsed = json.loads(message)
    assert parsed["error"] == "x" * 200 and parsed["errors_truncated"] is True


async def test_flags_override_env(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.md").write_text("# A\n\nalpha")
    env = job_env(
        database_url,
        tmp_path,
        RAG_PIPELINE_ID="ns/env",
        RAG_WATCH_DIRECTORY="/nonexistent",
        RUN_MODE="purge",
    )
    code, stats, _ = run_job(
        env, "--mode", "single", "--directory", str(tmp_path / "a"), "--pipeline-id", "ns/flag"
    )
    assert code == 0 and stats["pipeline_id"] == "ns/flag" and stats["files_added"] == 1


async def test_bad_configuration_exits_2_with_one_line_reason(
    database_url: str, tmp_path: Path
) -> None:
    env = job_env(
        database_url,
        tmp_path,
        RAG_PIPELINE_ID="ns/bad",
        RAG_WATCH_DIRECTORY=str(tmp_path / "missing"),
    )
    code, stats, stderr = run_job(env)
    assert code == 2
    assert stats["status"] == "failed" and "does not exist" in stats["error"]
    assert "\n" not in stats["error"]
    code, stats, _ = run_job(
        job_env(database_url, tmp_path, RAG_CHUNK_SIZE="many"), "--directory", str(tmp_path)
    )
    assert code == 2 and stats["error"].startswith("invalid setting RAG_CHUNK_SIZE:")
    code, stats, _ = run_job(job_env(None, tmp_path), "--directory", str(tmp_path))
    assert code == 2 and stats["error"] == "DATABASE_URL is not set"


async def test_embedding_model_change_exits_2(database_url: str, tmp_path: Path) -> None:
    env = one_file_env(database_url, tmp_path, "ns/model")
    assert run_job(env)[0] == 0
    env["EMBEDDING_MODEL_CHOICE"] = "hashing-other-dimension"
    env["EMBEDDING_PROVIDER"] = "hashing"
    env["EMBEDDING_DIMENSION"] = "32"
    code, stats, _ = run_job(env)
    assert code == 2 and "refusing to mix" in stats["error"]


async def test_database_unreachable_exits_1_and_leaves_state(
    database_url: str, tmp_path: Path
) -> None:
    env = one_file_env(database_url, tmp_path, "ns/unreach")
    assert run_job(env)[0] == 0
    before = await table_snapshot(database_url, "ns/unreach")
    (tmp_path / "d" / "y.md").write_text("# Y\n\nnew")
    env["DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2"
    code, stats, _ = run_job(env)
    assert code == 1 and stats["status"] == "failed"
    assert await table_snapshot(database_url, "ns/unreach") == before


async def test_purge_removes_only_this_pipeline(database_url: str, tmp_path: Path) -> None:
    for pid in ("ns/keep", "ns/purge"):
        env = one_file_env(database_url, tmp_path, pid)
        assert run_job(env)[0] == 0
    code, stats, _ = run_job(env, "--mode", "purge")
    assert code == 0 and stats["run_mode"] == "purge" and stats["files_deleted"] == 1
    assert (await table_snapshot(database_url, "ns/purge"))["docs"] == []
    assert len((await table_snapshot(database_url, "ns/keep"))["docs"]) == 1


async def test_sigkill_mid_run_then_rerun_converges(pg_admin_url: str, tmp_path: Path) -> None:
    """A job killed at any point is re-run to exactly the rows of an uninterrupted run."""
    files = POOL_MIN_FILES  # enough for the job to extract in worker processes
    write_mixed_corpus(tmp_path / "docs", files)
    clean_url = await create_database(pg_admin_url, "kill_clean")
    killed_url = await create_database(pg_admin_url, "kill_killed")
    common = {"RAG_PIPELINE_ID": "ns/kill", "RAG_WATCH_DIRECTORY": str(tmp_path / "docs")}
    assert run_job(job_env(clean_url, tmp_path, **common))[0] == 0

    # Two extraction workers whatever this machine has: a killed job must take them along.
    env = job_env(killed_url, tmp_path, **common, RAG_EXTRACT_WORKERS="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragkeeper_rag"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until some documents are committed, then kill -9
        if "progress" in line or time.monotonic() > deadline:
            break
    helpers = psutil.Process(proc.pid).children(recursive=True)  # fork server + workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(helpers) >= 3  # (and multiprocessing's resource tracker)
    _, alive = psutil.wait_procs(helpers, timeout=30)
    assert alive == [], "extraction processes outlived the killed job"
    partial = await table_snapshot(killed_url, "ns/kill")
    assert 0 < len(partial["docs"]) < files

    code, stats, _ = run_job(env)
    assert code == 0
    assert stats["files_unchanged"] == len(partial["docs"])
    assert await table_snapshot(killed_url, "ns/kill") == await table_snapshot(clean_url, "ns/kill")


async def test_continuous_mode_stops_gracefully_on_sigterm(
    database_url: str, tmp_path: Path
) -> None:
    env = one_file_env(database_url, tmp_path, "ns/cont")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragkeeper_rag", "--mode", "continuous", "--interval", "30"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "sync finished" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["run_mode"] == "continuous" and stats["files_added"] == 1


def test_unreadable_entries_are_reported_not_fatal(tmp_path: Path) -> None:
    """Unreadable files and directories are reported, the walk goes on.

    Root bypasses file permissions through CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH; when the
    tests run as root, the walk runs under ``setpriv`` with those capabilities dropped so the
    permissions really bite.
    """
    root = tmp_path / "tree"
    (root / "closed").mkdir(parents=True)
    (root / "closed" / "inner.md").write_text("hidden")
    (root / "open.md").write_text("# Open")
    (root / "secret.md").write_text("# Secret")
    (root / "secret.md").chmod(0)
    (root / "closed").chmod(0)
    for p in (tmp_path, root):
        p.chmod(0o755)
    code = (
        "import asyncio, json, sys; from pathlib import Path\n"
        "from ragkeeper_rag.sources.local import LocalSource\n"
        "from ragkeeper_rag.errors import FileSkipped\n"
        "src = LocalSource(Path(sys.argv[1]), extensions=frozenset({'md'}))\n"
        "scan = asyncio.run(src.scan(None))\n"
        "out = {'files': sorted(f.source_id for f in scan.files), 'skipped': scan.skipped}\n"
        "try:\n    asyncio.run(src.fetch(next(f for f in scan.files if f.source_id == 'secret.md')))\n"
        "except FileSkipped as e:\n    out['fetch'] = str(e)\n"
        "print(json.dumps(out))\n"
    )
    drop = (
        [
            "setpriv",
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
        ]
        if os.geteuid() == 0
        else []
    )
    proc = subprocess.run(
        [*drop, sys.executable, "-c", code, str(root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["files"] == ["open.md", "secret.md"]
    assert out["skipped"] == [["closed", "unreadable directory: Permission denied"]]
    assert out["fetch"] == "permission denied"


async def test_refused_embedding_api_key_exits_3(database_url: str, tmp_path: Path) -> None:
    """A 401 from the embedding API is a credentials problem, not a retryable one."""
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "Incorrect API key provided"}}')

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = one_file_env(
            database_url,
            tmp_path,
            "ns/key",
            EMBEDDING_PROVIDER="openai",
            EMBEDDING_API_KEY="sk-wrong-key-123",
            EMBEDDING_BASE_URL=f"http://127.0.0.1:{server.server_port}/v1",
        )
        code, stats, stderr = run_job(env)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 3 and "HTTP 401" in stats["error"]
    assert "sk-wrong-key-123" not in stderr + json.dumps(stats)
