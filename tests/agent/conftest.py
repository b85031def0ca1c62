"""Agent fixtures: a seeded knowledge store and a real uvicorn server on 127.0.0.1.

The server runs ``create_app`` in this test session's event loop on a socket bound
to a free port, with the embedded Postgres behind it; clients talk real HTTP.
The language model is the offline extractive ``FunctionModel`` (no network), and
``models.ALLOW_MODEL_REQUESTS`` is off for the whole package.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from pydantic_ai import models
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from ragkeeper_agent import Settings, create_app
from ragkeeper_agent.logs import AUDIT_LOGGER, RequestIdFilter, json_formatter
from ragkeeper_knowledge import ChunkWrite, DocumentWrite, KnowledgeStore, RowWrite
from ragkeeper_knowledge.embedding import HashingEmbedder
from tests.support import serve_asgi

models.ALLOW_MODEL_REQUESTS = False

SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
PIPELINE = "default/handbook"

DOCS = {
    "leave.md": (
        "Leave policy",
        "Employees receive 25 days of paid annual leave per year. "
        "Unused leave can be carried over until the end of March.\n\n"
        "Sick leave does not count against annual leave.",
    ),
    "security.md": (
        "Security handbook",
        "Laptops must use full-disk encryption. Report lost devices to the security team "
        "within one hour.",
    ),
    "office.md": (
        "Office guide",
        "The Berlin office opens at 8:00 and the kitchen is cleaned every Friday.",
    ),
}
SALES_ROWS = [
    {"region": "north", "amount": 120},
    {"region": "south", "amount": 80},
    {"region": "north", "amount": 30},
]


def tool_returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    """What the tools returned in an agent run's messages, in order."""
    return [
        p
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, ToolReturnPart)
    ]


def make_token(sub: str, *, secret: str = SECRET, **claims: Any) -> str:
    payload = {"sub": sub, "aud": "authenticated", "exp": int(time.time()) + 600, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def auth(sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(sub)}"}


async def stream_agent_lines(
    client: httpx.AsyncClient, user: str, after_first: Callable[[], Awaitable[None]]
) -> list[dict[str, Any]]:
    """The NDJSON lines of one ``/api/pydantic-agent`` turn; ``after_first`` runs once the
    first line has arrived (to break something while the stream is open)."""
    lines: list[dict[str, Any]] = []
    async with client.stream(
        "POST", "/api/pydantic-agent", json={"query": "hi"}, headers=auth(user)
    ) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            lines.append(json.loads(line))
            if len(lines) == 1:
                await after_first()
    return lines


@dataclass
class GatedModel:
    """A model that streams "first words ", sets ``started``, and sends ``rest`` only once
    ``release`` is set: the turn is held open while a test breaks something."""

    rest: str
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def model(self) -> FunctionModel:
        async def gated(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
            yield "first words "
            self.started.set()
            await self.release.wait()
            yield self.rest

        return FunctionModel(stream_function=gated)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.addFilter(RequestIdFilter())
        self.setFormatter(json_formatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def audit_lines() -> Iterator[list[str]]:
    """The ``ragkeeper.audit`` lines written during the test, as the service formats them."""
    handler = _Lines()
    logger = logging.getLogger(AUDIT_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def embedder() -> HashingEmbedder:
    return HashingEmbedder(64)


async def seed(store: KnowledgeStore, embedder: HashingEmbedder) -> None:
    await store.register_embedding_model(embedder.model_name, embedder.dimension)
    for source_id, (title, text) in DOCS.items():
        parts = [p for p in text.split("\n\n") if p.strip()]
        vectors = await embedder.embed(parts)
        await store.replace_document(
            DocumentWrite(
                pipeline_id=PIPELINE,
                source_id=source_id,
                title=title,
                url=f"https://docs.example/{source_id}",
                version="1",
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
                chunks=[
                    ChunkWrite(p, hashlib.sha256(p.encode()).hexdigest(), v, {"title": title})
                    for p, v in zip(parts, vectors, strict=True)
                ],
            )
        )
    csv_text = "region,amount\nnorth,120\nsouth,80\nnorth,30"
    await store.replace_document(
        DocumentWrite(
            pipeline_id=PIPELINE,
            source_id="sales.csv",
            title="Sales",
            version="1",
            content_hash="sales",
            chunks=[
                ChunkWrite(
                    csv_text,
                    "sales-chunk",
                    (await embedder.embed([csv_text]))[0],
                    {"title": "Sales"},
                )
            ],
            mime_type="text/csv",
            schema={"": ["region", "amount"]},
            rows=[RowWrite("", i + 1, row) for i, row in enumerate(SALES_ROWS)],
        )
    )
    await store.ensure_vector_index()  # as the ingestion job does after its first load


@pytest.fixture(scope="module")
async def seeded(store: KnowledgeStore, embedder: HashingEmbedder) -> KnowledgeStore:
    await seed(store, embedder)
    return store


def settings_for(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "auth_mode": "jwt",
        "auth_jwt_secret": SECRET,
        "rate_limit_per_minute": 1000,
        "auth_failures_per_minute": 1000,
        "public_requests_per_minute": 100_000,
        "log_format": "text",
        "db_pool_max_size": 5,
        "shutdown_grace_seconds": 5,
    }
    values.update(overrides)
    return Settings(**values)


class RunningServer:
    def __init__(self, base_url: str, app: Any) -> None:
        self.base_url = base_url
        self.app = app

    def client(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30.0, **kw)


@asynccontextmanager
async def serve(settings: Settings, **app_kw: Any) -> AsyncIterator[RunningServer]:
    """Run create_app(settings) under uvicorn on a free 127.0.0.1 port until exit."""
    app = create_app(settings, **app_kw)
    async with serve_asgi(app) as base_url:
        yield RunningServer(base_url, app)


@pytest.fixture(scope="module")
def server_factory(
    database_url: str, seeded: KnowledgeStore, embedder: HashingEmbedder
) -> Callable[..., Any]:
    def factory(**overrides: Any) -> Any:
        app_kw = {"embedder": overrides.pop("embedder", embedder)}
        for key in ("model", "transport"):
            if key in overrides:
                app_kw[key] = overrides.pop(key)
        return serve(settings_for(database_url, **overrides), **app_kw)

    return factory


@pytest.fixture(scope="module")
async def server(server_factory: Callable[..., Any]) -> AsyncIterator[RunningServer]:
    async with server_factory() as running:
        yield running


@pytest.fixture(scope="module")
async def admin_conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()
