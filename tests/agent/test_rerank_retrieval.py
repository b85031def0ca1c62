"""Second-stage reranking in ``retrieve()`` and ``POST /api/search`` (RERANK_*).

The hits are real (the seeded store of tests/agent/conftest.py, hybrid search on the embedded
Postgres); the reranking service is a fake TEI or Cohere-style server on 127.0.0.1
(``tests.fake_rerank``). A failing service never fails a search: it answers in the fused order,
counted in ``ragkeeper_agent_rerank_failures_total``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError

from ragkeeper_agent import Settings
from ragkeeper_agent.__main__ import main as agent_main
from ragkeeper_agent.agent import Deps, Passage, retrieve
from ragkeeper_agent.metrics import REGISTRY
from ragkeeper_agent.settings import describe_invalid
from ragkeeper_agent.tabular import ReadOnlySQL
from ragkeeper_knowledge import KnowledgeStore
from ragkeeper_knowledge.embedding import HashingEmbedder
from ragkeeper_knowledge.rerank import (
    RERANK_VARIABLES,
    CohereReranker,
    RerankConfig,
    Reranker,
    TEIReranker,
)
from tests.fake_rerank import FakeRerankService, Scripted
from tests.support import free_port, serve_asgi

from .conftest import SECRET, auth

QUERY = "annual leave and the Berlin office"
API_KEY = "rk-agent-5ecret"


def prefers(word: str) -> Callable[[str, str], float]:
    """A reranker that puts the passages mentioning ``word`` first, and scores the rest 0."""
    return lambda query, text: 0.9 if word in text else 0.0


def failures(reason: str) -> float:
    value = REGISTRY.get_sample_value("ragkeeper_agent_rerank_failures_total", {"reason": reason})
    return value or 0.0


def rerank_calls() -> float:
    return REGISTRY.get_sample_value("ragkeeper_agent_rerank_duration_seconds_count") or 0.0


@pytest.fixture
def deps_for(
    seeded: KnowledgeStore, embedder: HashingEmbedder, pool: asyncpg.Pool
) -> Callable[..., Deps]:
    def build(reranker: Reranker | None = None, candidates: int = 20) -> Deps:
        return Deps(
            store=seeded,
            embedder=embedder,
            sql=ReadOnlySQL(pool, timeout_ms=1000, max_rows=10),
            reranker=reranker,
            rerank_candidates=candidates,
        )

    return build


@pytest.fixture
async def tei() -> AsyncIterator[tuple[FakeRerankService, str]]:
    service = FakeRerankService("tei")
    async with serve_asgi(service) as base_url:
        yield service, base_url


def _ids(passages: list[Passage]) -> list[tuple[str, str]]:
    return [(p.document_id, p.content) for p in passages]


async def test_the_reranker_reorders_the_hybrid_hits(
    deps_for: Callable[..., Deps], tei: tuple[FakeRerankService, str]
) -> None:
    service, base_url = tei
    service.score = prefers("encryption")
    fused = await retrieve(deps_for(), QUERY, k=5)
    reranker = TEIReranker(base_url=base_url)

    reranked = await retrieve(deps_for(reranker, candidates=5), QUERY, k=5)
    await reranker.aclose()

    # Every hit was scored, with its title as context; the query went along unchanged.
    (seen,) = service.requests
    assert seen.body["query"] == QUERY
    assert service.texts() == [f"{p.title}\n\n{p.content}" for p in fused]
    # The security passage first, then the others in their fused order (equal scores: 0.0).
    security = next(p for p in fused if "encryption" in p.content)
    assert fused.index(security) > 0  # the fused order had it further down: a real reorder
    assert _ids(reranked) == _ids([security] + [p for p in fused if p is not security])
    assert [p.score for p in reranked] == [0.9, 0.0, 0.0, 0.0, 0.0]


async def test_candidates_widen_the_search_and_k_cuts_it(
    deps_for: Callable[..., Deps], tei: tuple[FakeRerankService, str]
) -> None:
    service, base_url = tei
    service.score = prefers("Sick leave")
    fused = await retrieve(deps_for(), QUERY, k=5)
    reranker = TEIReranker(base_url=base_url)

    (best,) = await retrieve(deps_for(reranker, candidates=5), QUERY, k=1)
    few = await retrieve(deps_for(reranker, candidates=2), QUERY, k=3)
    await reranker.aclose()

    assert len(service.texts(0)) == 5  # max(candidates, k) hits reranked
    assert "Sick leave" in best.content and best.score == 0.9
    assert len(service.texts(1)) == 3  # k above the candidates: k hits reranked
    assert len(few) == 3
    assert fused[0].content != best.content


async def test_equal_scores_keep_the_fused_order(
    deps_for: Callable[..., Deps], tei: tuple[FakeRerankService, str]
) -> None:
    service, base_url = tei
    service.score = lambda query, text: 0.5
    fused = await retrieve(deps_for(), QUERY, k=4)
    reranker = TEIReranker(base_url=base_url)
    reranked = await retrieve(deps_for(reranker, candidates=4), QUERY, k=4)
    await reranker.aclose()
    assert _ids(reranked) == _ids(fused)
    assert {p.score for p in reranked} == {0.5}


async def test_a_timeout_answers_in_the_fused_order_and_is_counted(
    deps_for: Callable[..., Deps], caplog: pytest.LogCaptureFixture
) -> None:
    service = FakeRerankService("tei", script=[Scripted(delay=2.0, body=[])])
    fused = await retrieve(deps_for(), QUERY, k=3)
    before, calls = failures("unavailable"), rerank_calls()
    async with serve_asgi(service) as base_url:
        reranker = TEIReranker(base_url=base_url, timeout_seconds=0.2, max_retries=0)
        with caplog.at_level(logging.WARNING):
            passages = await retrieve(deps_for(reranker), QUERY, k=3)
        await reranker.aclose()

    assert [p.model_dump() for p in passages] == [p.model_dump() for p in fused]
    assert failures("unavailable") == before + 1
    assert rerank_calls() == calls + 1
    assert "answering in the fused order" in caplog.text and "timeout" in caplog.text


async def test_a_malformed_answer_answers_in_the_fused_order_and_is_counted(
    deps_for: Callable[..., Deps],
) -> None:
    short = [{"index": 0, "relevance_score": 0.9}]  # one score for three documents
    service = FakeRerankService("cohere", script=[Scripted(200, {"results": short})])
    fused = await retrieve(deps_for(), QUERY, k=3)
    before = failures("error")
    async with serve_asgi(service) as base_url:
        reranker = CohereReranker(base_url=base_url + "/v1", model="m", max_retries=0)
        passages = await retrieve(deps_for(reranker, candidates=3), QUERY, k=3)
        await reranker.aclose()
    assert [p.model_dump() for p in passages] == [p.model_dump() for p in fused]
    assert failures("error") == before + 1
    assert len(service.requests) == 1  # a malformed answer is not retried


async def test_no_hits_calls_no_reranker(
    deps_for: Callable[..., Deps], tei: tuple[FakeRerankService, str]
) -> None:
    service, base_url = tei
    reranker = TEIReranker(base_url=base_url)
    passages = await retrieve(
        deps_for(reranker), QUERY, k=3, metadata_filter={"title": "no such document"}
    )
    await reranker.aclose()
    assert passages == [] and service.requests == []


# -- the app: /api/search with RERANK_* ------------------------------------------------------


async def test_search_api_reranks_through_a_cohere_style_service(
    server_factory: Callable[..., Any],
) -> None:
    service = FakeRerankService("cohere", score=prefers("encryption"))
    async with serve_asgi(service) as base_url:
        rerank = RerankConfig(
            provider="cohere",
            base_url=base_url + "/v1",
            model="rerank-test",
            api_key=API_KEY,
            candidates=5,
        )
        async with server_factory(rerank=rerank) as server, server.client() as c:
            assert service.requests == []  # start-up never calls the reranker
            response = await c.post(
                "/api/search", json={"query": QUERY, "k": 2}, headers=auth("mia")
            )
            metrics = (await c.get("/metrics")).text

    assert response.status_code == 200
    hits = response.json()
    assert [set(h) for h in hits] == [{"document_id", "title", "url", "score", "content"}] * 2
    assert hits[0]["title"] == "Security handbook" and hits[0]["score"] == 0.9
    assert hits[1]["score"] == 0.0
    (seen,) = service.requests
    assert seen.path == "/v1/rerank"
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert (seen.body["model"], seen.body["top_n"], len(seen.body["documents"])) == (
        "rerank-test",
        5,
        5,
    )
    assert "ragkeeper_agent_rerank_duration_seconds_count" in metrics


async def test_an_unreachable_service_neither_stops_start_up_nor_fails_a_search(
    server_factory: Callable[..., Any],
) -> None:
    rerank = RerankConfig(provider="tei", base_url=f"http://127.0.0.1:{free_port()}", max_retries=0)
    before = failures("unavailable")
    async with server_factory() as server, server.client() as c:
        fused = await c.post("/api/search", json={"query": QUERY, "k": 3}, headers=auth("mia"))
    async with server_factory(rerank=rerank) as server, server.client() as c:
        assert (await c.get("/readyz")).status_code == 200
        response = await c.post("/api/search", json={"query": QUERY, "k": 3}, headers=auth("mia"))
    assert response.status_code == 200
    assert response.json() == fused.json()
    assert failures("unavailable") == before + 1


# -- settings ------------------------------------------------------------------------------


@pytest.fixture
def agent_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in RERANK_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    return monkeypatch


def test_rerank_variables_fill_the_nested_settings(agent_env: pytest.MonkeyPatch) -> None:
    assert Settings().rerank == RerankConfig()  # type: ignore[call-arg]
    for name, value in {
        "RERANK_PROVIDER": "TEI",
        "RERANK_BASE_URL": "http://tei-reranker:80",
        "RERANK_API_KEY": API_KEY,
        "RERANK_MODEL": "BAAI/bge-reranker-v2-m3",
        "RERANK_TIMEOUT_SECONDS": "3",
        "RERANK_MAX_RETRIES": "1",
        "RERANK_CANDIDATES": "30",
    }.items():
        agent_env.setenv(name, value)
    rerank = Settings().rerank  # type: ignore[call-arg]
    assert (rerank.provider, rerank.base_url, rerank.model) == (
        "tei",
        "http://tei-reranker:80",
        "BAAI/bge-reranker-v2-m3",
    )
    assert rerank.api_key is not None and rerank.api_key.get_secret_value() == API_KEY
    assert (rerank.timeout_seconds, rerank.max_retries, rerank.candidates) == (3.0, 1, 30)


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"RERANK_CANDIDATES": "500"},
            "RERANK_CANDIDATES (rerank.candidates): Input should be less than or equal to 100",
        ),
        (
            {"RERANK_TIMEOUT_SECONDS": "soon"},
            "RERANK_TIMEOUT_SECONDS (rerank.timeout_seconds): Input should be a valid number",
        ),
        (
            {"RERANK_PROVIDER": "tei"},
            "rerank: Value error, RERANK_PROVIDER=tei needs RERANK_BASE_URL",
        ),
        (
            {"RERANK_PROVIDER": "cohere", "RERANK_BASE_URL": "https://api.cohere.com/v2"},
            "rerank: Value error, RERANK_PROVIDER=cohere needs RERANK_MODEL",
        ),
    ],
    ids=["candidates", "timeout", "tei-without-url", "cohere-without-model"],
)
def test_a_refused_rerank_setting_names_its_variable(
    agent_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    line: str,
) -> None:
    agent_env.setenv("RERANK_API_KEY", API_KEY)
    for name, value in env.items():
        agent_env.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()  # type: ignore[call-arg]
    assert line in describe_invalid(info.value)

    assert agent_main() == 2  # the service refuses to start, naming the variable
    err = capsys.readouterr().err
    assert line in err and API_KEY not in err
