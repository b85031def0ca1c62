"""OpenAICompatibleEmbedder against a fake embedding provider.

The provider is a true external boundary, so it is faked: in-process through
``httpx.MockTransport`` for scripted failures, and once as a real HTTP server on
127.0.0.1 to cover the real transport. Waits between retries go through an
injected ``sleep`` that records the delays and returns at once, so the tests
check the backoff policy without ever sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from ragkeeper_knowledge.embedding import OpenAICompatibleEmbedder, ensure_dimension
from ragkeeper_knowledge.errors import ConfigurationError, EmbeddingError, EmbeddingUnavailable

BASE_URL = "http://embeddings.test/v1"
API_KEY = "sk-test-5ecret-do-not-log"


def vector_for(text: str, dimension: int) -> list[float]:
    """A vector that identifies its text, so order mix-ups are visible."""
    seed = sum(map(ord, text)) + len(text)
    return [float(seed), float(len(text))] + [0.0] * (dimension - 2)


@dataclass
class FakeProvider:
    """Answers OpenAI-format embedding requests, after any scripted failures."""

    dimension: int = 8
    failures: list[httpx.Response | Exception] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            # Give every other request task the chance to start before this one
            # answers: without a concurrency limit, all of them would be in flight.
            for _ in range(20):
                await asyncio.sleep(0)
            if self.failures:
                failure = self.failures.pop(0)
                if isinstance(failure, Exception):
                    raise failure
                return failure
            texts = json.loads(request.content)["input"]
            data = [
                {"object": "embedding", "index": i, "embedding": vector_for(t, self.dimension)}
                for i, t in enumerate(texts)
            ]
            data.reverse()  # servers may answer out of order; the client sorts by index
            return httpx.Response(200, json={"object": "list", "data": data, "model": "m"})
        finally:
            self.in_flight -= 1


@dataclass
class SleepRecorder:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_embedder(
    provider: FakeProvider, sleep: SleepRecorder | None = None, **options: Any
) -> OpenAICompatibleEmbedder:
    options.setdefault("api_key", API_KEY)
    return OpenAICompatibleEmbedder(
        base_url=BASE_URL,
        model="text-embedding-test",
        transport=httpx.MockTransport(provider),
        sleep=sleep or SleepRecorder(),
        **options,
    )


async def test_embed_splits_batches_and_keeps_input_order() -> None:
    provider = FakeProvider()
    embedder = make_embedder(provider, batch_size=3)
    texts = [f"chunk number {i} " + "x" * i for i in range(10)]

    vectors = await embedder.embed(texts)
    await embedder.aclose()

    assert [len(body["input"]) for body in provider.bodies()] == [3, 3, 3, 1]
    assert sorted(t for body in provider.bodies() for t in body["input"]) == sorted(texts)
    assert vectors == [vector_for(t, 8) for t in texts]
    assert provider.requests[0].url == f"{BASE_URL}/embeddings"
    assert provider.bodies()[0]["model"] == "text-embedding-test"
    assert embedder.model_name == "openai:text-embedding-test"


async def test_embed_empty_input_sends_nothing() -> None:
    provider = FakeProvider()
    embedder = make_embedder(provider)
    assert await embedder.embed([]) == []
    await embedder.aclose()
    assert provider.requests == []


async def test_concurrency_limit_is_respected() -> None:
    provider = FakeProvider()
    embedder = make_embedder(provider, batch_size=1, max_concurrency=3)

    await embedder.embed([f"text {i}" for i in range(10)])
    await embedder.aclose()

    assert len(provider.requests) == 10
    assert provider.max_in_flight == 3


async def test_429_with_retry_after_is_waited_out_then_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sleep = SleepRecorder()
    provider = FakeProvider(
        failures=[
            httpx.Response(
                429,
                headers={"Retry-After": "7"},
                json={"error": {"message": "Rate limit reached", "type": "requests"}},
            )
        ]
    )
    embedder = make_embedder(provider, sleep)

    with caplog.at_level(logging.WARNING):
        vectors = await embedder.embed(["hello"])
    await embedder.aclose()

    assert vectors == [vector_for("hello", 8)]
    assert len(provider.requests) == 2
    assert sleep.delays == [7.0]
    assert "Rate limit reached" in caplog.text


async def test_retry_after_longer_than_the_limit_fails_fast() -> None:
    sleep = SleepRecorder()
    provider = FakeProvider(failures=[httpx.Response(429, headers={"Retry-After": "3600"})] * 3)
    embedder = make_embedder(provider, sleep, max_retry_after_seconds=60)

    with pytest.raises(EmbeddingUnavailable, match="HTTP 429"):
        await embedder.embed(["hello"])
    await embedder.aclose()

    assert len(provider.requests) == 1
    assert sleep.delays == []


async def test_5xx_storm_raises_unavailable_after_backoff() -> None:
    sleep = SleepRecorder()
    provider = FakeProvider(failures=[httpx.Response(503, text="overloaded")] * 10)
    embedder = make_embedder(
        provider,
        sleep,
        max_retries=4,
        backoff_initial_seconds=0.5,
        backoff_max_seconds=3.0,
        backoff_jitter_seconds=0.25,
    )

    with pytest.raises(EmbeddingUnavailable, match="5 attempt") as info:
        await embedder.embed(["a", "b"])
    await embedder.aclose()

    assert "overloaded" in str(info.value)
    assert len(provider.requests) == 5
    assert len(sleep.delays) == 4
    for attempt, delay in enumerate(sleep.delays):
        base = min(0.5 * 2**attempt, 3.0)
        assert base <= delay <= min(base + 0.25, 3.0)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"error": {"message": "This model's maximum context length is 8192 tokens"}}, "8192"),
        ({"error": "Input validation error: inputs cannot be empty", "error_type": "V"}, "empty"),
        ({"object": "error", "message": "The model `x` does not exist."}, "does not exist"),
    ],
    ids=["openai", "tei", "vllm"],
)
async def test_400_raises_embedding_error_with_reason(body: dict[str, Any], reason: str) -> None:
    sleep = SleepRecorder()
    provider = FakeProvider(failures=[httpx.Response(400, json=body)])
    embedder = make_embedder(provider, sleep)

    with pytest.raises(EmbeddingError, match="HTTP 400") as info:
        await embedder.embed(["too long"])
    await embedder.aclose()

    assert reason in str(info.value)
    assert not isinstance(info.value, EmbeddingUnavailable)
    assert len(provider.requests) == 1
    assert sleep.delays == []


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("read timed out"), httpx.ConnectError("connection refused")],
    ids=["timeout", "connect"],
)
async def test_timeouts_and_connection_errors_are_retried(failure: Exception) -> None:
    sleep = SleepRecorder()
    provider = FakeProvider(failures=[failure])
    embedder = make_embedder(provider, sleep)

    assert await embedder.embed(["hello"]) == [vector_for("hello", 8)]
    await embedder.aclose()

    assert len(provider.requests) == 2
    assert len(sleep.delays) == 1


async def test_api_key_sent_as_bearer_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    provider = FakeProvider(
        failures=[
            httpx.Response(500, json={"error": {"message": f"upstream saw key {API_KEY}"}}),
            httpx.Response(401, json={"error": {"message": f"Incorrect API key: {API_KEY}"}}),
        ]
    )
    embedder = make_embedder(provider)

    with caplog.at_level(logging.DEBUG), pytest.raises(EmbeddingError) as info:
        await embedder.embed(["hello"])
    await embedder.aclose()

    assert [r.headers["Authorization"] for r in provider.requests] == [f"Bearer {API_KEY}"] * 2
    assert "upstream saw key" in caplog.text  # the retry was logged...
    assert API_KEY not in caplog.text  # ...without the key
    assert API_KEY not in str(info.value)
    assert API_KEY not in repr(embedder)


async def test_no_authorization_header_without_key() -> None:
    provider = FakeProvider()
    embedder = make_embedder(provider, api_key=None)
    await embedder.embed(["hello"])
    await embedder.aclose()
    assert "Authorization" not in provider.requests[0].headers


async def test_dimension_is_probed_once_from_the_first_response() -> None:
    provider = FakeProvider(dimension=12)
    embedder = make_embedder(provider)

    with pytest.raises(ConfigurationError, match="EMBEDDING_DIMENSION"):
        _ = embedder.dimension
    assert await ensure_dimension(embedder) == 12
    assert embedder.dimension == 12
    assert await ensure_dimension(embedder) == 12
    await embedder.aclose()

    assert len(provider.requests) == 1


async def test_configured_dimension_mismatch_is_a_configuration_error() -> None:
    embedder = make_embedder(FakeProvider(dimension=12), dimension=1536)
    assert embedder.dimension == 1536
    with pytest.raises(ConfigurationError, match="12-dimensional"):
        await embedder.embed(["hello"])
    await embedder.aclose()


async def test_send_dimensions_puts_it_in_the_request() -> None:
    provider = FakeProvider(dimension=16)
    embedder = make_embedder(provider, dimension=16, send_dimensions=True)
    await embedder.embed(["hello"])
    await embedder.aclose()
    assert provider.bodies()[0]["dimensions"] == 16


@pytest.mark.parametrize(
    ("payload", "texts"),
    [
        ({"data": [{"embedding": [0.1, 0.2]}]}, ["a"]),
        (
            {"data": [{"index": 0, "embedding": [0.1]}, {"index": 0, "embedding": [0.2]}]},
            ["a", "b"],
        ),
        ({"data": [{"index": 0, "embedding": [0.1]}]}, ["a", "b"]),
        ({"object": "list"}, ["a"]),
    ],
    ids=["no-index", "duplicate-index", "missing-vector", "no-data"],
)
async def test_malformed_response_is_an_embedding_error(
    payload: dict[str, Any], texts: list[str]
) -> None:
    provider = FakeProvider(failures=[httpx.Response(200, json=payload)])
    embedder = make_embedder(provider)
    with pytest.raises(EmbeddingError, match="malformed|indices"):
        await embedder.embed(texts)
    await embedder.aclose()


async def test_injected_client_is_used_and_left_open() -> None:
    provider = FakeProvider()
    client = httpx.AsyncClient(transport=httpx.MockTransport(provider))
    embedder = OpenAICompatibleEmbedder(base_url=BASE_URL + "/", model="m", client=client)
    await embedder.embed(["hello"])
    await embedder.aclose()
    assert not client.is_closed
    await client.aclose()
    assert provider.requests[0].url == f"{BASE_URL}/embeddings"


# -- a real HTTP server on 127.0.0.1 ---------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    seen_auth: list[str | None] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen_auth.append(self.headers.get("Authorization"))
        data = [{"index": i, "embedding": vector_for(t, 4)} for i, t in enumerate(body["input"])]
        payload = json.dumps({"data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def local_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_real_http_server_round_trip(local_server: str) -> None:
    _Handler.seen_auth = []
    embedder = OpenAICompatibleEmbedder(
        base_url=local_server, model="m", api_key=API_KEY, batch_size=2, provider="vllm"
    )
    texts = ["one", "two", "three"]
    assert await embedder.embed(texts) == [vector_for(t, 4) for t in texts]
    await embedder.aclose()
    assert _Handler.seen_auth == [f"Bearer {API_KEY}"] * 2
    assert embedder.dimension == 4


async def test_refused_connection_becomes_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleep = SleepRecorder()
    embedder = OpenAICompatibleEmbedder(
        base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=2, sleep=sleep
    )
    with pytest.raises(EmbeddingUnavailable, match="connection error"):
        await embedder.embed(["hello"])
    await embedder.aclose()
    assert len(sleep.delays) == 2
