"""Peak memory of the ingestion job (its whole process tree) against corpus size; the agent's too.

Run::

    uv run --frozen --group bench python -m bench.memory       # 500, 2,000 and 8,000 files
    uv run --frozen --group bench python -m bench.memory --sizes 500 8000 --embedder hashing
    uv run --frozen --group bench python -m bench.memory --agent   # the agent server

For each corpus size it writes a mixed corpus (``tests/rag/corpus.py``: md, txt, html, pdf,
docx, csv, xlsx in turn) and runs the real job, ``python -m ragkeeper_rag``, as a subprocess with
its default settings (the offline embedder unless ``--embedder hashing``, the default number of
extraction workers) into a fresh database of one embedded PostgreSQL 18 + pgvector server. A
thread samples the job and every process below it (fork server, extraction workers) at ~20 Hz
(``tests/rag/rss.py``) and keeps the peak of their summed RSS — what a container's memory limit
has to hold (an upper bound: pages the workers share with the fork server count once per
process) — and of their summed PSS (shared pages split, closer to the cgroup's own count).

It prints, per size: files, chunks embedded, seconds, chunks/s, peak RSS of the tree, of the
main process and of the workers, the peak PSS, and the tree's peak as a share of the operator's
default ``JOB_MEMORY_LIMIT`` (1Gi); then the ratio peak(largest)/peak(smallest), which stays
near 1.0 when memory does not grow with the number of files.

``--agent`` instead loads a small corpus with the job, starts the agent (``python -m
ragkeeper_agent``, offline embedder, offline extractive model, auth off) and sends chat turns and
searches at concurrency 1 and 16, long queries included, then chat turns with attached files at
the largest the defaults allow, two turns at a time (the agent reads one file at a time): a 4.6 MiB
text-heavy DOCX (refused after reading: its text is over MAX_PROMPT_CHARS), an A4 page scanned
at 300 dpi as a PNG and as a PDF, and a 4,470 x 4,470 PNG (20 MP, the agent's OCR pixel cap), all
OCR'd by tesseract, whose processes count in the tree. It prints the server's peak RSS against
the chart's agent limit (1Gi). The operator's peak is ``bench/operator.py``'s.

Every run has a timeout (``--timeout``) after which the process tree is killed; the benchmark
always ends by itself. Nothing here gates CI; ``tests/rag/test_memory.py`` holds the bound.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._ingest_env import PostgresHandle  # noqa: E402
from tests.rag.corpus import write_mixed_corpus  # noqa: E402
from tests.rag.rss import MIB, TreeSampler  # noqa: E402
from tests.support import free_port  # noqa: E402

GI = 1024 * MIB
JOB_LIMIT = 1 * GI  # the operator's default JOB_MEMORY_LIMIT
AGENT_LIMIT = 1 * GI  # charts/ragkeeper/values.yaml: agent.resources.limits.memory
TARGET_SHARE = 0.6
QUERIES = [
    "how long is the warranty on a laptop battery",
    "refund policy for a customer invoice",
    "who approves travel expenses",
    "password reset and account security",
    "backup schedule of the production server",
    "printer license renewal",
]


@dataclass
class JobRun:
    files: int
    embedder: str
    seconds: float
    chunks_embedded: int
    exit_code: int
    peak_rss_mib: float
    peak_main_mib: float
    peak_workers_mib: float
    peak_pss_mib: float
    processes: int

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_embedded / self.seconds if self.seconds else 0.0


def _kill_tree(proc: subprocess.Popen[Any]) -> None:
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.Error:
        family = []
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.kill()
    proc.wait(timeout=30)


def job_env(
    database_url: str, folder: Path, pipeline_id: str, embedder: str, work: Path
) -> dict[str, str]:
    """This process's environment without RAG_/EMBEDDING_/GOOGLE_ settings, plus the run's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAG_", "EMBEDDING_", "GOOGLE_"))
        and k not in ("DATABASE_URL", "RUN_MODE")
    }
    env.update(
        DATABASE_URL=database_url,
        RAG_PIPELINE_ID=pipeline_id,
        RAG_WATCH_DIRECTORY=str(folder),
        RAG_TERMINATION_LOG=str(work / "termination-log"),
        EMBEDDING_PROVIDER=embedder,
        LOG_LEVEL="WARNING",
    )
    return env


def run_job(
    env: dict[str, str], timeout: float, *, pss: bool = True
) -> tuple[int, dict[str, Any], Any, float]:
    """Run ``python -m ragkeeper_rag`` once; (exit code, stats, peaks, seconds)."""
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ragkeeper_rag"], env=env, stdout=stdout, stderr=stderr
        )
        with TreeSampler(proc.pid, pss=pss) as sampler:
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_tree(proc)
                code = -9
        seconds = time.perf_counter() - started
        stdout.seek(0)
        lines = stdout.read().decode(errors="replace").strip().splitlines()
        stderr.seek(0)
        if code != 0:
            tail = stderr.read().decode(errors="replace")[-2000:]
            print(f"job exited with {code}:\n{tail}", file=sys.stderr)
    stats = json.loads(lines[-1]) if lines else {}
    return code, stats, sampler.peaks, seconds


async def measure_job(
    pg: PostgresHandle, size: int, embedder: str, work: Path, timeout: float
) -> JobRun:
    folder = work / f"corpus-{size}"
    write_mixed_corpus(folder, size)
    url = await pg.create_database(f"memory_{embedder}_{size}")
    env = job_env(url, folder, f"bench/memory-{size}", embedder, work)
    code, stats, peaks, seconds = await asyncio.to_thread(run_job, env, timeout)
    shutil.rmtree(folder, ignore_errors=True)
    return JobRun(
        files=size,
        embedder=embedder,
        seconds=seconds,
        chunks_embedded=int(stats.get("chunks_embedded", 0)),
        exit_code=code,
        peak_rss_mib=peaks.mib("rss"),
        peak_main_mib=peaks.mib("main"),
        peak_workers_mib=peaks.mib("children"),
        peak_pss_mib=peaks.mib("pss"),
        processes=peaks.processes,
    )


def print_jobs(runs: list[JobRun]) -> None:
    print(
        f"{'files':>6} {'chunks':>7} {'seconds':>8} {'chunks/s':>8} {'tree RSS':>9} "
        f"{'main':>7} {'workers':>8} {'tree PSS':>9} {'procs':>5} {'of 1Gi':>7} exit"
    )
    for r in runs:
        print(
            f"{r.files:>6} {r.chunks_embedded:>7} {r.seconds:>8.1f} {r.chunks_per_second:>8.1f} "
            f"{r.peak_rss_mib:>6.0f}MiB {r.peak_main_mib:>4.0f}MiB {r.peak_workers_mib:>5.0f}MiB "
            f"{r.peak_pss_mib:>6.0f}MiB {r.processes:>5} {r.peak_rss_mib * MIB / JOB_LIMIT:>7.2f} "
            f"{r.exit_code}"
        )
    if len(runs) > 1:
        small, large = runs[0], runs[-1]
        print(
            f"peak({large.files}) / peak({small.files}) = "
            f"{large.peak_rss_mib / small.peak_rss_mib:.2f} (tree RSS)"
        )
    worst = max(r.peak_rss_mib for r in runs)
    verdict = "met" if worst * MIB < TARGET_SHARE * JOB_LIMIT else "NOT met"
    print(
        f"target: tree RSS < {TARGET_SHARE:.0%} of 1Gi ({TARGET_SHARE * JOB_LIMIT / MIB:.0f} MiB): "
        f"{verdict} (worst {worst:.0f} MiB)"
    )


# ------------------------------------------------------------------- agent


async def _drive_agent(base: str, turns: int) -> dict[str, float]:
    """Chat turns and searches at concurrency 1 and 16 (some queries as long as allowed)."""
    long_query = " ".join(QUERIES * 60)[:7900]
    timings: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:

        async def chat(i: int) -> None:
            body = {"query": QUERIES[i % len(QUERIES)], "user_id": f"mem-{i % 20}"}
            async with client.stream("POST", "/api/pydantic-agent", json=body) as r:
                r.raise_for_status()
                async for _ in r.aiter_lines():
                    pass

        async def search(i: int) -> None:
            query = long_query if i % 4 == 0 else QUERIES[i % len(QUERIES)]
            r = await client.post("/api/search", json={"query": query, "k": 10})
            r.raise_for_status()

        for concurrency in (1, 16):
            for name, call in (("chat", chat), ("search", search)):
                counter = iter(range(turns))

                async def worker(call: Any = call, counter: Any = counter) -> None:
                    for i in counter:
                        await call(i)

                started = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                timings[f"{name} x{concurrency}"] = turns / (time.perf_counter() - started)
        started = time.perf_counter()
        statuses = await _attach(client, attachment_files())
        timings["attach x2"] = len(statuses) / (time.perf_counter() - started)
        print(f"  attachments: statuses {sorted(statuses)}", flush=True)
    return timings


def attachment_files() -> list[tuple[str, bytes, str]]:
    """The largest attachments the defaults take, as (name, bytes, MIME type)."""
    import random
    import string

    from PIL import Image, ImageDraw, ImageFont

    from tests.rag.corpus import docx_bytes, render

    rng = random.Random(7)

    def paragraph() -> str:
        words = (
            "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(60)
        )
        return " ".join(words)

    docx = docx_bytes("Report", [paragraph() for _ in range(17_000)])
    page = render([paragraph() for _ in range(22)], width=2480, size=40)
    png, pdf, big = io.BytesIO(), io.BytesIO(), io.BytesIO()
    page.save(png, format="PNG")
    page.convert("RGB").save(pdf, format="PDF", resolution=300.0)
    poster = Image.new("L", (4470, 4470), 255)
    draw, font = ImageDraw.Draw(poster), ImageFont.load_default(size=48)
    for y in range(100, 4400, 120):
        draw.text((100, y), paragraph()[:200], fill=0, font=font)
    poster.save(big, format="PNG")
    docx_mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    return [
        ("report.docx", docx, docx_mime),
        ("scan.png", png.getvalue(), "image/png"),
        ("scan.pdf", pdf.getvalue(), "application/pdf"),
        ("poster.png", big.getvalue(), "image/png"),
    ]


async def _attach(client: httpx.AsyncClient, files: list[tuple[str, bytes, str]]) -> list[int]:
    """Each file in a chat turn of its own, two turns at a time, twice over; the statuses."""
    statuses: list[int] = []
    queue = iter(files * 2)

    async def worker() -> None:
        for name, data, mime in queue:
            item = {"fileName": name, "content": base64.b64encode(data).decode(), "mimeType": mime}
            body = {"query": "What does the attached file say?", "files": [item]}
            async with client.stream("POST", "/api/pydantic-agent", json=body) as r:
                statuses.append(r.status_code)
                async for _ in r.aiter_lines():
                    pass

    await asyncio.gather(worker(), worker())
    return statuses


async def measure_agent(pg: PostgresHandle, work: Path, turns: int, timeout: float) -> None:
    folder = work / "agent-corpus"
    write_mixed_corpus(folder, 70)
    url = await pg.create_database("memory_agent")
    code, stats, _, _ = await asyncio.to_thread(
        run_job, job_env(url, folder, "bench/agent", "offline", work), timeout, pss=False
    )
    if code != 0:
        raise SystemExit(f"loading the agent's corpus failed ({code})")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDDING_", "LLM_", "AUTH_"))}
    env.update(
        DATABASE_URL=url,
        HOST="127.0.0.1",
        PORT=str(port),
        AUTH_MODE="disabled",
        RATE_LIMIT_PER_MINUTE="0",
        LOG_LEVEL="WARNING",
        EMBEDDING_PROVIDER="offline",
    )
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "ragkeeper_agent"], env=env, stderr=log)
        try:
            with TreeSampler(proc.pid, pss=True) as sampler:
                base = f"http://127.0.0.1:{port}"
                await _wait_ready(base, proc)
                idle = psutil.Process(proc.pid).memory_info().rss / MIB
                rates = await asyncio.wait_for(_drive_agent(base, turns), timeout)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill_tree(proc)
    peak = sampler.peaks
    verdict = "met" if peak.rss < TARGET_SHARE * AGENT_LIMIT else "NOT met"
    chunks = stats.get("chunks_embedded")
    print(f"agent: corpus {chunks} chunks (offline embedder), {turns} requests per step")
    for step, rate in rates.items():
        print(f"  {step:<10} {rate:6.1f} req/s")
    print(
        f"agent peak RSS {peak.mib('rss'):.0f} MiB (PSS {peak.mib('pss'):.0f} MiB, ready and idle "
        f"{idle:.0f} MiB) = {peak.rss / AGENT_LIMIT:.2f} of its 1Gi limit; "
        f"target < {TARGET_SHARE:.0%}: {verdict}"
    )


async def _wait_ready(base: str, proc: subprocess.Popen[Any]) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"the agent exited with {proc.returncode}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the agent never became ready")


# -------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000], help="corpus sizes")
    p.add_argument("--embedder", choices=("offline", "hashing"), default="offline")
    p.add_argument("--agent", action="store_true", help="measure the agent server instead")
    p.add_argument("--turns", type=int, default=60, help="--agent: requests per step")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per run before a kill")
    p.add_argument("--json", type=Path, help="also write the job figures to this JSON file")
    return p.parse_args(argv)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs ({platform.machine()}), "
        f"{psutil.virtual_memory().total / GI:.0f} GiB RAM; sampling every 50 ms"
    )
    work = Path(tempfile.mkdtemp(prefix="rk-memory-"))
    pg = PostgresHandle()
    try:
        if args.agent:
            await measure_agent(pg, work, args.turns, args.timeout)
            return
        runs = []
        for size in args.sizes:
            run = await measure_job(pg, size, args.embedder, work, args.timeout)
            runs.append(run)
            print(
                f"  {size} files ({args.embedder}): tree RSS peak {run.peak_rss_mib:.0f} MiB "
                f"in {run.seconds:.0f}s",
                flush=True,
            )
        print_jobs(runs)
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    finally:
        pg.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
