"""The knowledge base as an MCP server (``/mcp``), driven by real MCP clients over HTTP.

``examples/docs`` is ingested by the ingestion job as ``make run`` does; the agent serves it
under uvicorn with bearer-JWT authentication. The clients are the ``mcp`` SDK's own
(``mcp.Client`` over ``streamable_http_client``) and a Pydantic AI agent (``TestModel``) with
an ``MCPToolset``. The tools only read shared documents; what is per user in this service
(conversations, the rate-limit window) is checked not to cross from one token to another.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from unittest import mock

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.models.test import TestModel

from ragkeeper_agent import Settings
from ragkeeper_agent.mcp_server import document_uri
from scripts import local_stack
from tests.support import shared_tmp_dir

from .conftest import RunningServer, auth, make_token, serve, settings_for, tool_returns
from .test_extractive import DOCS

TOOLS = ["get_document", "list_documents", "query_rows", "search_documents"]
QUESTION = "How do I reset the Kestrel thermostat?"


@pytest.fixture(scope="module")
async def ingested(database_url: str) -> str:
    """examples/docs ingested by the real job, as `make run` does."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "EMBEDDING_"))}
    with shared_tmp_dir("rk-mcp") as data:
        env = local_stack.stack_env(database_url, data, clean)
        code, stats = await asyncio.to_thread(local_stack.ingest, DOCS, env)
    assert code == 0, stats
    return database_url


@pytest.fixture(scope="module")
async def stack(ingested: str) -> AsyncIterator[RunningServer]:
    async with serve(settings_for(ingested)) as running:
        yield running


@asynccontextmanager
async def mcp_client(server: RunningServer, headers: dict[str, str]) -> AsyncIterator[Client]:
    """The SDK's client over streamable HTTP, sending ``headers`` with every request."""
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(f"{server.base_url}/mcp", http_client=http)
        async with Client(transport) as client:
            yield client


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    content: dict[str, Any] = result.structured_content
    return content


async def api_search(server: RunningServer, query: str, user: str = "me") -> list[dict[str, Any]]:
    async with server.client() as c:
        r = await c.post("/api/search", json={"query": query, "k": 5}, headers=auth(user))
    assert r.status_code == 200, r.text
    hits: list[dict[str, Any]] = r.json()
    return hits


async def test_lists_tools_and_resources(stack: RunningServer) -> None:
    async with mcp_client(stack, auth("me")) as client:
        tools = (await client.list_tools()).tools
        resources = (await client.list_resources()).resources
        templates = (await client.list_resource_templates()).resource_templates
    assert sorted(t.name for t in tools) == TOOLS
    search = next(t for t in tools if t.name == "search_documents")
    assert "citation" in (search.description or "")
    assert search.input_schema["properties"]["k"]["maximum"] == 20
    assert search.input_schema["required"] == ["query"]
    files = sorted(r.name.rsplit(":", 1)[1] for r in resources)
    assert files == sorted(p.name for p in DOCS.iterdir())
    assert all(str(r.uri) == document_uri(r.name) for r in resources)
    assert [t.uri_template for t in templates] == [
        "ragkeeper://documents/{document_id}{?offset,limit}"
    ]


async def test_search_gives_the_hits_of_api_search_with_citations(stack: RunningServer) -> None:
    async with mcp_client(stack, auth("me")) as client:
        found = structured(await client.call_tool("search_documents", {"query": QUESTION}))
    passages = found["passages"]
    hits = await api_search(stack, QUESTION)
    assert [(p["document_id"], p["content"]) for p in passages] == [
        (h["document_id"], h["content"]) for h in hits
    ]
    assert [p["score"] for p in passages] == [h["score"] for h in hits]
    first = passages[0]
    assert first["title"] and first["document_id"].endswith("kestrel-quick-start.txt")
    assert isinstance(first["chunk"], int) and first["resource"] == document_uri(
        first["document_id"]
    )
    assert "30 seconds" in " ".join(p["content"] for p in passages)


async def test_documents_read_in_pages_by_tool_and_resource(stack: RunningServer) -> None:
    async with mcp_client(stack, auth("me")) as client:
        listed = structured(await client.call_tool("list_documents", {"limit": 2}))
        assert len(listed["documents"]) == 2 and listed["next_offset"] == 2
        doc_id = next(
            d["document_id"]
            for d in structured(await client.call_tool("list_documents", {}))["documents"]
            if d["document_id"].endswith("employee-handbook.md")
        )
        pages = [await page(client, doc_id, 0)]
        while pages[-1]["next_offset"] is not None:
            pages.append(await page(client, doc_id, pages[-1]["next_offset"]))
        read = await client.read_resource(f"{document_uri(doc_id)}?offset=0&limit=300")
        odd = await client.read_resource(f"{document_uri(doc_id)}?offset=-5&limit=-1")
    assert len(pages) > 2 and all(len(p["content"]) <= 300 for p in pages)
    whole = "".join(p["content"] for p in pages)
    assert "leave" in whole.lower()
    as_resource = json.loads(read.contents[0].text)  # type: ignore[union-attr]
    assert as_resource["content"] == pages[0]["content"]
    assert as_resource["title"] == pages[0]["title"] and as_resource["next_offset"] == 300
    odd_page = json.loads(odd.contents[0].text)  # type: ignore[union-attr]
    assert odd_page["offset"] == 0 and odd_page["content"] == pages[0]["content"][:1]


async def page(client: Client, doc_id: str, offset: int) -> dict[str, Any]:
    args = {"document_id": doc_id, "offset": offset, "limit": 300}
    return structured(await client.call_tool("get_document", args))


async def test_mistakes_are_error_results_and_counted(stack: RunningServer) -> None:
    async with mcp_client(stack, auth("me")) as client:
        unknown = await client.call_tool("get_document", {"document_id": "nope"})
        too_big = await client.call_tool("search_documents", {"query": "x", "k": 500})
        bad_sql = await client.call_tool("query_rows", {"sql": "DELETE FROM document_rows"})
        rows = await client.call_tool(
            "query_rows", {"sql": "SELECT count(*) AS n FROM tabular_datasets"}
        )
        with pytest.raises(MCPError):
            await client.read_resource(document_uri("nope"))
    assert unknown.is_error and "no document with id 'nope'" in unknown.content[0].text  # type: ignore[union-attr]
    assert too_big.is_error and bad_sql.is_error and not rows.is_error
    assert '"n": 2' in rows.content[0].text  # type: ignore[union-attr]
    async with stack.client() as c:
        metrics = (await c.get("/metrics")).text
    for tool, outcome in [("get_document", "invalid"), ("query_rows", "invalid")]:
        assert metric(metrics, tool, outcome) >= 1, (tool, outcome)
    assert metric(metrics, "query_rows", "ok") >= 1
    assert metric(metrics, "search_documents", "ok") >= 1


def metric(text: str, tool: str, outcome: str) -> float:
    prefix = f'ragkeeper_agent_mcp_tool_calls_total{{outcome="{outcome}",tool="{tool}"}} '
    values = [float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


@pytest.mark.parametrize(
    ("query", "refused"),
    [('"a\\u0000b"', "NUL"), ('"a\\ud800b"', "surrogate"), ("[" * 200 + "]" * 200, "levels deep")],
)
async def test_bad_text_in_arguments_is_422(stack: RunningServer, query: str, refused: str) -> None:
    """The text rule and the depth limit apply to /mcp's body as to every route's."""
    call = '{"name": "search_documents", "arguments": {"query": ' + query + "}}"
    body = '{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": ' + call + "}"
    headers = {"Accept": "application/json, text/event-stream", **auth("me")}
    headers["Content-Type"] = "application/json"
    async with stack.client() as c:
        r = await c.post("/mcp", content=body.encode(), headers=headers)
    assert r.status_code == 422 and refused in r.text, r.text
    assert "query" in r.text or refused == "levels deep"


BAD_TOKENS = {
    "none": {},
    "garbage": {"Authorization": "Bearer not.a.jwt"},
    "wrong_secret": {"Authorization": f"Bearer {make_token('a', secret='x' * 40)}"},
}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/list",
    "params": {},
}


async def test_missing_or_bad_token_is_401_and_audited(
    stack: RunningServer, audit_lines: list[str]
) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    async with stack.client() as c:
        for name, bad in BAD_TOKENS.items():
            r = await c.post("/mcp", json=INITIALIZE, headers={**headers, **bad})
            assert r.status_code == 401, name
            assert r.headers["www-authenticate"] == "Bearer"
    events = [json.loads(line) for line in audit_lines]
    assert [(e["event"], e["route"]) for e in events] == [("auth_failed", "/mcp")] * 3
    with pytest.raises(BaseException) as refused:
        async with mcp_client(stack, {}) as client:
            await client.list_tools()
    assert any(isinstance(e, MCPError) for e in leaves(refused.value))


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups: the SDK's client raises an HTTP
    refusal as an ``MCPError`` from its task group."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


async def test_rate_limit_applies_per_user(ingested: str, audit_lines: list[str]) -> None:
    """Each tool call, resource read or resource listing counts against the user's window
    (the handshake and tools/list do not); past it the request is 429 with Retry-After,
    audited; another user's window is untouched."""
    async with serve(settings_for(ingested, rate_limit_per_minute=3)) as srv:
        async with mcp_client(srv, auth("limited")) as client:
            await client.list_tools()
            for _ in range(3):
                await client.call_tool("search_documents", {"query": "thermostat"})
            with pytest.raises(BaseException) as refused:
                await client.call_tool("search_documents", {"query": "thermostat"})
            assert any(isinstance(e, MCPError) for e in leaves(refused.value))
        r = await raw_call(srv, "limited")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert (await raw_call(srv, "someone-else")).status_code == 200
        async with srv.client() as c:
            metrics = (await c.get("/metrics")).text
    assert 'ragkeeper_agent_rate_limit_rejections_total{route="/mcp"}' in metrics
    events = [json.loads(line) for line in audit_lines]
    assert {(e["event"], e["route"], e["user_id"]) for e in events} == {
        ("rate_limited", "/mcp", "limited")
    }


async def raw_call(server: RunningServer, user: str) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "search_documents", "arguments": {"query": "thermostat"}},
    }
    headers = {"Accept": "application/json, text/event-stream", **auth(user)}
    async with server.client() as c:
        return await c.post("/mcp", json=body, headers=headers)


async def test_another_users_conversations_are_not_reachable(stack: RunningServer) -> None:
    """Documents are shared; conversations are per user, and no MCP tool or resource
    reaches them: user B sees nothing of user A's conversation."""
    question_of_a = "What does the Kestrel price list say about the zebra discount?"
    async with stack.client() as c:
        r = await c.post("/api/pydantic-agent", json={"query": question_of_a}, headers=auth("a"))
        assert r.status_code == 200
        session_id = json.loads(r.text.splitlines()[-1])["session_id"]
    async with mcp_client(stack, auth("b")) as client:
        seen = [
            (await client.list_resources()).model_dump_json(),
            (await client.list_resource_templates()).model_dump_json(),
            (
                await client.call_tool("search_documents", {"query": "zebra discount"})
            ).model_dump_json(),
            (await client.call_tool("list_documents", {"limit": 200})).model_dump_json(),
            (
                await client.call_tool("query_rows", {"sql": "SELECT * FROM conversations"})
            ).model_dump_json(),
        ]
    assert not any(session_id in text or "zebra discount?" in text for text in seen)
    assert '"is_error":true' in seen[-1].replace(" ", "")


async def test_pydantic_ai_agent_calls_the_tools(stack: RunningServer) -> None:
    toolset = MCPToolset(f"{stack.base_url}/mcp", headers=auth("me"))
    agent = Agent(TestModel(call_tools=["search_documents", "list_documents"]), toolsets=[toolset])
    async with agent:
        result = await agent.run(QUESTION)
    returned = {p.tool_name: p.content for p in tool_returns(result.all_messages())}
    assert set(returned) == {"search_documents", "list_documents"}
    assert "kestrel" in json.dumps(returned["search_documents"], default=str).lower()


async def test_local_stack_searches_without_a_token(ingested: str) -> None:
    """`make run`'s settings (scripts/local_stack.py): MCP on, no token needed, and the
    endpoint only answers requests addressed to localhost (DNS-rebinding protection)."""
    env = local_stack.agent_env({"DATABASE_URL": ingested}, port=8000)
    with mock.patch.dict(os.environ, env, clear=True):
        settings = Settings()
    assert settings.mcp_enabled and settings.auth_mode == "disabled"
    async with serve(settings) as srv:
        async with mcp_client(srv, {}) as client:
            found = structured(await client.call_tool("search_documents", {"query": QUESTION}))
        assert found["passages"][0]["document_id"].endswith("kestrel-quick-start.txt")
        headers = {"Accept": "application/json, text/event-stream", "Host": "evil.example"}
        async with srv.client() as c:
            r = await c.post("/mcp", json=INITIALIZE, headers=headers)
        assert r.status_code == 421


async def test_sql_tool_off_offers_no_query_rows(ingested: str) -> None:
    """SQL_TOOL_ENABLED=false: query_rows is not offered, and a call of it is an error."""
    async with (
        serve(settings_for(ingested, sql_tool_enabled=False)) as srv,
        mcp_client(srv, auth("me")) as client,
    ):
        names = sorted(t.name for t in (await client.list_tools()).tools)
        refused = await client.call_tool("query_rows", {"sql": "SELECT 1"})
    assert names == [name for name in TOOLS if name != "query_rows"]
    assert refused.is_error


async def test_mcp_enabled_false_serves_no_endpoint(stack: RunningServer, ingested: str) -> None:
    """MCP_ENABLED=false: /mcp is 404. On or off, /mcp (a JSON-RPC endpoint) is not part of
    the OpenAPI document."""
    async with stack.client() as c:
        assert "/mcp" not in (await c.get("/openapi.json")).json()["paths"]
    async with serve(settings_for(ingested, mcp_enabled=False)) as srv, srv.client() as c:
        r = await c.post("/mcp", json=INITIALIZE, headers=auth("me"))
        assert r.status_code == 404
        assert "/mcp" not in (await c.get("/openapi.json")).json()["paths"]
