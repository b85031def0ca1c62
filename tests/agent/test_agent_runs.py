"""Agent behaviour with TestModel/FunctionModel, error statuses and graceful draining."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic_ai import AgentRunResultEvent, models
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolCallPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel

from ragkeeper_agent.agent import Deps, ToolInputError, build_agent, tabular_rows
from ragkeeper_agent.app import request_shutdown
from ragkeeper_agent.extractive import LABEL, PIECE_MAX_CHARS, _pieces, extractive_model
from ragkeeper_agent.llm import build_model
from ragkeeper_agent.tabular import ReadOnlySQL
from ragkeeper_agent.websearch import WebSearch
from ragkeeper_knowledge import KnowledgeStore
from ragkeeper_knowledge.embedding import HashingEmbedder
from ragkeeper_knowledge.errors import ConfigurationError

from .conftest import GatedModel, auth, settings_for, stream_agent_lines, tool_returns


def deps(store: KnowledgeStore, embedder: HashingEmbedder, pool: asyncpg.Pool) -> Deps:
    return Deps(store=store, embedder=embedder, sql=ReadOnlySQL(pool, timeout_ms=500, max_rows=50))


def test_model_requests_are_disabled() -> None:
    assert models.ALLOW_MODEL_REQUESTS is False


async def offered_tools(run_deps: Deps) -> list[str]:
    """The tools the model is offered in a run with ``run_deps``."""
    offered: list[str] = []

    def capture(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        offered.extend(t.name for t in info.function_tools)
        return ModelResponse(parts=[TextPart("ok")])

    agent = build_agent(extractive_model())
    with agent.override(model=FunctionModel(capture)):
        await agent.run("anything", deps=run_deps)
    return sorted(offered)


async def test_sql_tool_is_neither_offered_nor_run_when_off(
    seeded: KnowledgeStore, embedder: HashingEmbedder, pool: asyncpg.Pool
) -> None:
    """SQL_TOOL_ENABLED=false (``Deps.sql_enabled``); the MCP side is in test_mcp.py."""
    run_deps = deps(seeded, embedder, pool)
    run_deps.sql_enabled = False
    assert await offered_tools(run_deps) == ["list_documents", "read_document", "search_documents"]
    with pytest.raises(ToolInputError, match="SQL_TOOL_ENABLED"):
        await tabular_rows(run_deps, "SELECT 1")


async def test_tools_offered_and_run_under_test_model(
    seeded: KnowledgeStore, embedder: HashingEmbedder, pool: asyncpg.Pool
) -> None:
    offered = await offered_tools(deps(seeded, embedder, pool))
    agent = build_agent(extractive_model())
    # web_search is hidden without SearXNG/Brave; there is no code-execution tool at all.
    assert sorted(offered) == [
        "list_documents",
        "query_tabular_rows",
        "read_document",
        "search_documents",
    ]
    with agent.override(model=TestModel(call_tools=["search_documents", "list_documents"])):
        result = await agent.run("anything", deps=deps(seeded, embedder, pool))
    returned = {p.tool_name: p.content for p in tool_returns(result.all_messages())}
    assert len(returned["list_documents"]) == 4
    assert returned["search_documents"], "the hybrid search found passages"


async def test_model_can_query_rows_and_sees_sql_errors(
    seeded: KnowledgeStore, embedder: HashingEmbedder, pool: asyncpg.Pool
) -> None:
    seen: list[str] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        assert isinstance(last, ModelRequest)
        for part in last.parts:
            seen.append(str(getattr(part, "content", "")))
        if len(messages) == 1:
            return ModelResponse(
                parts=[ToolCallPart("query_tabular_rows", {"sql": "DROP TABLE x"})]
            )
        if len(messages) == 3:
            sql = "SELECT sum((row_data->>'amount')::int) AS total FROM document_rows"
            return ModelResponse(parts=[ToolCallPart("query_tabular_rows", {"sql": sql})])
        return ModelResponse(parts=[TextPart("done")])

    agent = build_agent(FunctionModel(model))
    result = await agent.run("total sales?", deps=deps(seeded, embedder, pool))
    assert result.output == "done"
    assert any("the query failed" in s and "syntax error" in s for s in seen)
    assert any('{"total": 230}' in s for s in seen)


async def test_extractive_answer_cites_passages(
    seeded: KnowledgeStore, embedder: HashingEmbedder, pool: asyncpg.Pool
) -> None:
    agent = build_agent(extractive_model())
    run_deps = deps(seeded, embedder, pool)
    result = await agent.run("Can unused leave be carried over?", deps=run_deps)
    assert result.output.startswith(LABEL)
    assert "carried over until the end of March" in result.output
    cited = [p for p in run_deps.sources.values() if f"[{p.n}]" in result.output]
    assert cited and cited[0].title == "Leave policy"
    assert [p.tool_name for p in tool_returns(result.all_messages())] == ["search_documents"]


async def test_extractive_answer_streams_line_by_line(
    seeded: KnowledgeStore, embedder: HashingEmbedder, pool: asyncpg.Pool
) -> None:
    agent = build_agent(extractive_model())
    deltas: list[str] = []
    output = None
    async with agent.run_stream_events(
        "How many days of paid annual leave?", deps=deps(seeded, embedder, pool)
    ) as events:
        async for event in events:
            if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                deltas.append(event.part.content)
            elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                deltas.append(event.delta.content_delta)
            elif isinstance(event, AgentRunResultEvent):
                output = event.result.output
    assert output is not None and "".join(deltas) == output
    assert len(deltas) > 3, "the answer must still arrive in several pieces"
    assert all(d.endswith("\n") for d in deltas[:-1]), "each piece is a whole line"
    assert deltas[0].startswith(LABEL) and deltas[1].startswith("> ")


def test_long_lines_stream_in_word_bounded_pieces() -> None:
    line = " ".join(f"word{i}" for i in range(100)) + "\n"
    pieces = _pieces(f"{line}\nshort\n")
    assert "".join(pieces) == f"{line}\nshort\n"
    assert len(pieces) > 3 and all(len(p) <= PIECE_MAX_CHARS + 1 for p in pieces)
    assert all(p.endswith((" ", "\n")) for p in pieces), pieces


async def _failing_stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    raise RuntimeError("provider exploded")
    yield ""  # pragma: no cover - makes this an async generator


async def test_failure_before_streaming_is_a_real_status(
    server_factory: Callable[..., Any],
) -> None:
    model = FunctionModel(stream_function=_failing_stream)
    async with server_factory(model=model) as srv, srv.client() as c:
        r = await c.post("/api/pydantic-agent", json={"query": "hi"}, headers=auth("pat"))
        assert r.status_code == 500
        assert r.headers["content-type"].startswith("application/json")


async def test_draining_ends_running_streams_cleanly(server_factory: Callable[..., Any]) -> None:
    gate = GatedModel(rest="never sent")
    async with (
        server_factory(model=gate.model, shutdown_grace_seconds=0) as srv,
        srv.client() as c,
    ):

        async def shut_down() -> None:
            await gate.started.wait()
            request_shutdown(srv.app)

        lines = await stream_agent_lines(c, "quinn", shut_down)
        ready = await c.get("/readyz")
    gate.release.set()
    assert lines[0]["text"] == "first words "
    assert lines[-1]["complete"] is True and "shutting down" in lines[-1]["error"]
    assert ready.status_code == 503


async def test_web_search_tool_uses_searxng_when_configured(
    seeded: KnowledgeStore, embedder: HashingEmbedder, pool: asyncpg.Pool
) -> None:
    queries: list[str] = []

    def searxng(request: httpx.Request) -> httpx.Response:
        queries.append(request.url.params["q"])
        assert request.url.params["format"] == "json"
        results = [{"title": "Example", "url": "https://example.org/", "content": "A snippet."}]
        return httpx.Response(200, json={"results": results})

    async with httpx.AsyncClient(transport=httpx.MockTransport(searxng)) as http:
        run_deps = deps(seeded, embedder, pool)
        run_deps.web = WebSearch(http, searxng_url="http://searxng.local")
        agent = build_agent(extractive_model())
        with agent.override(model=TestModel(call_tools=["web_search"])):
            result = await agent.run("news", deps=run_deps)
    assert queries == ["a"]
    returned = [p.content for p in tool_returns(result.all_messages())]
    assert returned == ["Example\nhttps://example.org/\nA snippet."]


def test_model_choice_from_settings(database_url: str) -> None:
    assert build_model(settings_for(database_url)).model_name == "ragkeeper-extractive"
    ollama = settings_for(database_url, llm_provider="ollama", llm_choice="qwen3:4b")
    assert build_model(ollama).model_name == "qwen3:4b"
    for broken in (
        {"llm_provider": "openai"},  # no API key
        {"llm_provider": "vllm", "llm_choice": "m"},  # no base URL
        {"llm_provider": "ollama"},  # no model name
    ):
        with pytest.raises(ConfigurationError):
            build_model(settings_for(database_url, **broken))


def test_extractive_answer_quotes_sentences_under_a_matching_heading_not_the_heading() -> None:
    from ragkeeper_agent.agent import Passage
    from ragkeeper_agent.extractive import compose_answer

    passage = Passage(
        n=1,
        document_id="p:faq",
        title="FAQ",
        url="https://docs.example/faq",
        score=1.0,
        content="## Orders\n\n### How long is the warranty?\n\nEvery unit is covered for 24 months.\n\n"
        "### Returns\n\nReturns are free within 30 days.",
    )
    answer = compose_answer("How long is the warranty?", [passage])
    assert "> Every unit is covered for 24 months. [1]" in answer
    assert "> ###" not in answer and "> ## " not in answer
