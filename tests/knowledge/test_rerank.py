"""Rerankers against fake TEI and Cohere-style services on 127.0.0.1, and their settings.

The services are real HTTP servers (``tests.fake_rerank`` under ``serve_asgi``), so requests
go through httpx's real transport: the tests read the path, headers and body each request
arrived with. Waits between retries go through an injected ``sleep`` that records the delays
and returns at once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from ragkeeper_knowledge.errors import RerankError, RerankUnavailable, TransientError
from ragkeeper_knowledge.rerank import (
    RERANK_VARIABLES,
    CohereReranker,
    RerankConfig,
    TEIReranker,
    create_reranker,
    rerank_env,
)
from tests.fake_rerank import FakeRerankService, Scripted, Shape
from tests.support import free_port, serve_asgi

API_KEY = "rk-test-5ecret-do-not-log"
QUERY = "reset the kestrel thermostat"
TEXTS = [
    "The Berlin office opens at 8:00.",
    "To reset the Kestrel thermostat hold the dial for ten seconds.",
    "The Kestrel thermostat costs 149 euros.",
]
EXPECTED = [1.0, 4.0, 3.0]  # words of QUERY in each text (tests.fake_rerank.words_in_common)


@dataclass
class SleepRecorder:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def tei() -> AsyncIterator[tuple[FakeRerankService, str]]:
    service = FakeRerankService("tei")
    async with serve_asgi(service) as base_url:
        yield service, base_url


@pytest.fixture
async def cohere() -> AsyncIterator[tuple[FakeRerankService, str]]:
    service = FakeRerankService("cohere")
    async with serve_asgi(service) as base_url:
        yield service, base_url + "/v1"


def _reranker(shape: Shape, base_url: str, **options: Any) -> TEIReranker | CohereReranker:
    options.setdefault("sleep", SleepRecorder())
    if shape == "tei":
        return TEIReranker(base_url=base_url, **options)
    return CohereReranker(base_url=base_url, model="rerank-test", api_key=API_KEY, **options)


# -- request and response shapes ------------------------------------------------------------


async def test_tei_request_shape_and_scores_in_input_order(
    tei: tuple[FakeRerankService, str],
) -> None:
    service, base_url = tei
    reranker = create_reranker(RerankConfig(provider="tei", base_url=base_url + "/"))
    assert isinstance(reranker, TEIReranker)

    scores = await reranker.rerank(QUERY, TEXTS)
    await reranker.aclose()

    assert scores == EXPECTED  # TEI answers sorted by score; the client puts them back in order
    (seen,) = service.requests
    assert seen.path == "/rerank"
    assert seen.body == {"query": QUERY, "texts": TEXTS, "truncate": True}
    assert "authorization" not in seen.headers
    assert reranker.name == "tei"


async def test_cohere_request_shape_with_model_top_n_and_bearer_key(
    cohere: tuple[FakeRerankService, str],
) -> None:
    service, base_url = cohere
    config = RerankConfig(
        provider="cohere", base_url=base_url, model="rerank-v3.5", api_key=API_KEY
    )
    reranker = create_reranker(config)
    assert isinstance(reranker, CohereReranker)

    scores = await reranker.rerank(QUERY, TEXTS)
    await reranker.aclose()

    assert scores == EXPECTED
    (seen,) = service.requests
    assert seen.path == "/v1/rerank"
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert seen.body == {
        "model": "rerank-v3.5",
        "query": QUERY,
        "documents": TEXTS,
        "top_n": len(TEXTS),  # every document comes back with its score
    }
    assert reranker.name == "cohere:rerank-v3.5"
    assert API_KEY not in repr(reranker)


async def test_tei_sends_at_most_32_texts_per_request(tei: tuple[FakeRerankService, str]) -> None:
    service, base_url = tei
    reranker = _reranker("tei", base_url)
    texts = [f"passage {i} " + "kestrel " * (i % 4) for i in range(70)]

    scores = await reranker.rerank("kestrel", texts)
    await reranker.aclose()

    assert sorted(len(seen.body["texts"]) for seen in service.requests) == [6, 32, 32]
    assert scores == [1.0 if i % 4 else 0.0 for i in range(70)]


async def test_no_texts_sends_nothing(tei: tuple[FakeRerankService, str]) -> None:
    service, base_url = tei
    reranker = _reranker("tei", base_url)
    assert await reranker.rerank(QUERY, []) == []
    await reranker.aclose()
    assert service.requests == []


# -- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["tei", "cohere"])
async def test_503_and_429_with_retry_after_are_retried(
    shape: Shape, caplog: pytest.LogCaptureFixture
) -> None:
    service = FakeRerankService(shape)
    service.script = [
        Scripted(503, {"error": "Model is overloaded", "error_type": "overloaded"}),
        Scripted(429, {"message": "rate limited"}, headers={"Retry-After": "3"}),
    ]
    sleep = SleepRecorder()
    async with serve_asgi(service) as base_url:
        reranker = _reranker(shape, base_url, sleep=sleep, max_retries=2)
        with caplog.at_level(logging.WARNING):
            scores = await reranker.rerank(QUERY, TEXTS)
        await reranker.aclose()

    assert scores == EXPECTED
    assert len(service.requests) == 3
    assert 0.5 <= sleep.delays[0] <= 1.0  # backoff: 0.5 s plus jitter
    assert sleep.delays[1] == 3.0  # the server's Retry-After, exactly
    assert "Model is overloaded" in caplog.text and "rate limited" in caplog.text
    assert API_KEY not in caplog.text


async def test_5xx_storm_raises_unavailable_after_the_retries() -> None:
    service = FakeRerankService("tei", script=[Scripted(502, b"bad gateway")] * 5)
    sleep = SleepRecorder()
    async with serve_asgi(service) as base_url:
        reranker = _reranker("tei", base_url, sleep=sleep, max_retries=2)
        with pytest.raises(RerankUnavailable, match="3 attempt") as info:
            await reranker.rerank(QUERY, TEXTS)
        await reranker.aclose()

    assert "bad gateway" in str(info.value)
    assert isinstance(info.value, TransientError)
    assert len(service.requests) == 3 and len(sleep.delays) == 2


async def test_retry_after_longer_than_the_timeout_fails_at_once() -> None:
    service = FakeRerankService("cohere", script=[Scripted(429, {}, {"Retry-After": "60"})])
    sleep = SleepRecorder()
    async with serve_asgi(service) as base_url:
        reranker = _reranker("cohere", base_url, sleep=sleep, timeout_seconds=10)
        with pytest.raises(RerankUnavailable, match="HTTP 429"):
            await reranker.rerank(QUERY, TEXTS)
        await reranker.aclose()
    assert len(service.requests) == 1 and sleep.delays == []


async def test_a_slow_service_times_out_and_is_retried() -> None:
    service = FakeRerankService("tei", script=[Scripted(delay=1.0, body=[])] * 2)
    sleep = SleepRecorder()
    async with serve_asgi(service) as base_url:
        reranker = _reranker("tei", base_url, sleep=sleep, timeout_seconds=0.1, max_retries=1)
        with pytest.raises(RerankUnavailable, match="timeout"):
            await reranker.rerank(QUERY, TEXTS)
        await reranker.aclose()
    assert len(service.requests) == 2 and len(sleep.delays) == 1


async def test_a_refused_connection_is_unavailable() -> None:
    sleep = SleepRecorder()
    reranker = _reranker("tei", f"http://127.0.0.1:{free_port()}", sleep=sleep, max_retries=1)
    with pytest.raises(RerankUnavailable, match="connection error"):
        await reranker.rerank(QUERY, TEXTS)
    await reranker.aclose()
    assert len(sleep.delays) == 1


# -- refusals and malformed answers: a RerankError at once, never retried --------------------


@pytest.mark.parametrize(
    ("shape", "status", "body", "reason"),
    [
        ("tei", 413, {"error": "batch size 40 > maximum allowed batch size 32"}, "batch size"),
        ("cohere", 400, {"message": "invalid model: rerank-test"}, "invalid model"),
        ("cohere", 401, {"message": f"invalid api token {API_KEY}"}, "invalid api token ***"),
    ],
    ids=["tei-413", "cohere-400", "cohere-401-key-redacted"],
)
async def test_a_refusal_is_a_rerank_error_with_the_servers_reason(
    shape: Shape, status: int, body: dict[str, Any], reason: str
) -> None:
    service = FakeRerankService(shape, script=[Scripted(status, body)])
    async with serve_asgi(service) as base_url:
        reranker = _reranker(shape, base_url)
        with pytest.raises(RerankError, match=f"HTTP {status}") as info:
            await reranker.rerank(QUERY, TEXTS)
        await reranker.aclose()
    assert reason in str(info.value)
    assert API_KEY not in str(info.value)
    assert not isinstance(info.value, RerankUnavailable)
    assert len(service.requests) == 1


def _tei(*pairs: tuple[Any, Any]) -> list[dict[str, Any]]:
    return [{"index": index, "score": score} for index, score in pairs]


@pytest.mark.parametrize(
    ("shape", "body", "message"),
    [
        ("tei", _tei((0, 0.1), (1, 0.2)), "2 score"),  # one short
        ("tei", _tei((0, 0.1), (1, 0.2), (2, 0.3), (3, 0.4)), "4 score"),  # one too many
        ("tei", _tei((0, 0.1), (1, 0.2), (3, 0.3)), "index 3"),
        ("tei", _tei((0, 0.1), (1, 0.2), (-1, 0.3)), "index -1"),
        ("tei", _tei((0, 0.1), (1, 0.2), (1, 0.3)), "index 1 twice"),
        ("tei", _tei((0, 0.1), (1, 0.2), (True, 0.3)), "index True"),
        ("tei", _tei((0, 0.1), (1, 0.2), ("2", 0.3)), "index '2'"),
        ("tei", _tei((0, 0.1), (1, 0.2), (2, "high")), "score 'high'"),
        ("tei", _tei((0, 0.1), (1, 0.2), (2, None)), "score None"),
        ("tei", b'[{"index":0,"score":1},{"index":1,"score":2},{"index":2,"score":NaN}]', "nan"),
        ("tei", b"<html>proxy error</html>", "no JSON"),
        ("tei", {"results": []}, "malformed"),
        ("cohere", {"data": []}, "malformed"),
        ("cohere", [], "malformed"),
        ("cohere", {"results": [{"index": 0, "score": 0.5}] * 3}, "relevance_score None"),
    ],
    ids=[
        "short",
        "long",
        "out-of-range",
        "negative",
        "duplicate",
        "bool-index",
        "string-index",
        "string-score",
        "no-score",
        "nan-score",
        "not-json",
        "tei-object",
        "cohere-no-results",
        "cohere-list",
        "cohere-wrong-key",
    ],
)
async def test_a_malformed_answer_is_a_rerank_error(shape: Shape, body: Any, message: str) -> None:
    service = FakeRerankService(shape, script=[Scripted(200, body)])
    async with serve_asgi(service) as base_url:
        reranker = _reranker(shape, base_url)
        with pytest.raises(RerankError, match=message) as info:
            await reranker.rerank(QUERY, TEXTS)
        await reranker.aclose()
    assert not isinstance(info.value, RerankUnavailable)
    assert len(service.requests) == 1


async def test_integer_scores_are_numbers() -> None:
    service = FakeRerankService("tei", script=[Scripted(200, _tei((2, 1), (0, 3), (1, -2)))])
    async with serve_asgi(service) as base_url:
        reranker = _reranker("tei", base_url)
        assert await reranker.rerank(QUERY, TEXTS) == [3.0, -2.0, 1.0]
        await reranker.aclose()


# -- settings -----------------------------------------------------------------------------------


def test_rerank_env_reads_the_set_variables_by_field() -> None:
    assert rerank_env({}) == {}
    environ = {
        "RERANK_PROVIDER": " Cohere ",
        "RERANK_BASE_URL": "http://vllm:8000/v1",
        "RERANK_API_KEY": "",  # empty counts as unset
        "RERANK_MODEL": "BAAI/bge-reranker-v2-m3",
        "RERANK_TIMEOUT_SECONDS": "2.5",
        "RERANK_MAX_RETRIES": "0",
        "RERANK_CANDIDATES": "40",
    }
    config = RerankConfig.model_validate(rerank_env(environ))
    assert config == RerankConfig(
        provider="cohere",
        base_url="http://vllm:8000/v1",
        model="BAAI/bge-reranker-v2-m3",
        timeout_seconds=2.5,
        max_retries=0,
        candidates=40,
    )
    assert set(RERANK_VARIABLES) == set(RerankConfig.model_fields)
    assert all(v.startswith("RERANK_") for v in RERANK_VARIABLES.values())


def test_defaults_are_off_with_20_candidates() -> None:
    config = RerankConfig()
    assert (config.provider, config.enabled) == ("none", False)
    assert (config.timeout_seconds, config.max_retries, config.candidates) == (10.0, 2, 20)
    assert create_reranker(config) is None


def test_settings_without_a_provider_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert create_reranker(RerankConfig(base_url="http://tei:80")) is None
    assert "RERANK_PROVIDER" in caplog.text


@pytest.mark.parametrize(
    ("values", "field_name"),
    [
        ({"candidates": "1"}, "candidates"),
        ({"candidates": "101"}, "candidates"),
        ({"timeout_seconds": "0"}, "timeout_seconds"),
        ({"max_retries": "-1"}, "max_retries"),
        ({"provider": "jina"}, "provider"),
        ({"extra": "x"}, "extra"),
    ],
)
def test_out_of_range_values_are_refused_by_field(values: dict[str, str], field_name: str) -> None:
    with pytest.raises(ValidationError) as info:
        RerankConfig.model_validate(values)
    assert info.value.errors()[0]["loc"] == (field_name,)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"provider": "tei"}, "RERANK_PROVIDER=tei needs RERANK_BASE_URL"),
        ({"provider": "cohere", "model": "m"}, "RERANK_PROVIDER=cohere needs RERANK_BASE_URL"),
        ({"provider": "tei", "base_url": "tei:80"}, "RERANK_BASE_URL must start with http"),
        ({"provider": "cohere", "base_url": "http://x/v1"}, "cohere needs RERANK_MODEL"),
    ],
)
def test_a_combination_that_cannot_work_names_the_variable(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        RerankConfig.model_validate(values)


async def test_the_tei_model_is_only_a_name() -> None:
    config = RerankConfig(provider="tei", base_url="http://tei:80", model="BAAI/bge-reranker-base")
    reranker = create_reranker(config)
    assert reranker is not None and reranker.name == "tei:BAAI/bge-reranker-base"
    await reranker.aclose()
