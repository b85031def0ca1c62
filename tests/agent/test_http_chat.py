"""The NDJSON chat route, conversation history, search and ops routes over real HTTP."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx

from .conftest import PIPELINE, RunningServer, auth


async def stream_lines(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> list[dict[str, Any]]:
    async with client.stream("POST", "/api/pydantic-agent", json=body, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) async for line in r.aiter_lines() if line]


async def test_chat_streams_cumulative_text_and_saves_conversation(
    server: RunningServer,
) -> None:
    async with server.client() as c:
        lines = await stream_lines(
            c,
            {"query": "How many days of paid annual leave?", "user_id": "alice"},
            auth("alice"),
        )
    *chunks, final = lines
    assert len(chunks) > 3, "text must arrive in several pieces"
    text = ""
    for chunk in chunks:
        text += chunk["delta"]
        assert chunk["text"] == text, "each line carries the exact answer so far"
    assert final["complete"] is True
    assert final["text"] == text
    assert "Extractive answer (no language model configured)" in text
    assert "25 days of paid annual leave" in text
    assert "[1]" in text and "Leave policy" in text and "https://docs.example/leave.md" in text
    assert final["conversation_title"] == "How many days of paid annual leave?"
    assert final["sources"][0]["title"] == "Leave policy"
    assert "25 days of paid annual leave" in final["sources"][0]["content"]
    session_id = final["session_id"]

    async with server.client() as c:
        convs = (await c.get("/api/conversations", headers=auth("alice"))).json()
        assert [x["session_id"] for x in convs] == [session_id]
        msgs = (
            await c.get(f"/api/conversations/{session_id}/messages", headers=auth("alice"))
        ).json()
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert msgs[1]["content"] == text


async def test_chat_continues_conversation_with_replayed_history(server: RunningServer) -> None:
    async with server.client() as c:
        first = (await stream_lines(c, {"query": "encryption laptops?"}, auth("carol")))[-1]
        sid = first["session_id"]
        second = (
            await stream_lines(
                c, {"query": "lost devices report?", "session_id": sid}, auth("carol")
            )
        )[-1]
        assert second["session_id"] == sid
        assert "conversation_title" not in second
        assert "security team" in second["text"]
        msgs = (
            await c.get(
                f"/api/conversations/{sid}/messages",
                params={"include_tools": "true"},
                headers=auth("carol"),
            )
        ).json()
    # Two turns, each: user prompt, tool call, tool return, answer.
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant"] * 2
    assert msgs[4]["content"] == "lost devices report?"


async def test_history_is_isolated_between_users(server: RunningServer) -> None:
    async with server.client() as c:
        final = (await stream_lines(c, {"query": "office opening hours"}, auth("dave")))[-1]
        sid = final["session_id"]
        assert (await c.get("/api/conversations", headers=auth("erin"))).json() == []
        r = await c.get(f"/api/conversations/{sid}/messages", headers=auth("erin"))
        assert r.status_code == 404
        r = await c.post(
            "/api/pydantic-agent", json={"query": "hi", "session_id": sid}, headers=auth("erin")
        )
        assert r.status_code == 404
        r = await c.get("/api/conversations", params={"user_id": "dave"}, headers=auth("erin"))
        assert r.status_code == 403


async def test_chat_says_when_documents_do_not_answer(server: RunningServer) -> None:
    async with server.client() as c:
        final = (await stream_lines(c, {"query": "zyxwv quantum giraffes"}, auth("fay")))[-1]
    assert "documents do not contain an answer" in final["text"]


async def test_chat_rejects_invalid_bodies_with_422(server: RunningServer) -> None:
    async with server.client() as c:
        for body in ({}, {"query": ""}, {"query": "x", "session_id": "bad id!"}, {"query": 5}):
            r = await c.post("/api/pydantic-agent", json=body, headers=auth("gus"))
            assert r.status_code == 422, body
        r = await c.post("/api/pydantic-agent", json={"query": "x" * 9000}, headers=auth("gus"))
        assert r.status_code == 422


async def test_oversized_body_is_413(server: RunningServer) -> None:
    """MAX_REQUEST_BYTES (2 MiB) on every route; the chat route adds the base64 size of
    MAX_MESSAGE_ATTACHMENT_BYTES (10 MiB) for attached files: 15.3 MiB in all."""
    async with server.client() as c:
        for route, size in (("/api/search", 3 * 1024 * 1024), ("/api/pydantic-agent", 16 << 20)):
            r = await c.post(
                route,
                content=json.dumps({"query": "x" * size}),
                headers={**auth("gus"), "content-type": "application/json"},
            )
            assert r.status_code == 413, route
            assert "request body exceeds" in r.json()["detail"]


async def test_search_returns_ranked_passages(server: RunningServer) -> None:
    async with server.client() as c:
        r = await c.post(
            "/api/search",
            json={"query": "full-disk encryption", "k": 2, "pipeline_id": PIPELINE},
            headers=auth("hal"),
        )
        other = await c.post(
            "/api/search",
            json={"query": "full-disk encryption", "pipeline_id": "someone/else"},
            headers=auth("hal"),
        )
    assert r.status_code == 200
    hits = r.json()
    assert len(hits) == 2
    assert hits[0]["title"] == "Security handbook"
    assert hits[0]["url"] == "https://docs.example/security.md"
    assert hits[0]["score"] >= hits[1]["score"]
    assert other.json() == []


async def test_ops_routes(server: RunningServer) -> None:
    async with server.client() as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        page = await c.get("/")
        assert page.status_code == 200 and "ragkeeper" in page.text
        head = await c.head("/")
        assert head.status_code == 200 and head.headers["content-type"].startswith("text/html")
        assert (await c.get("/static/style.css")).status_code == 200
        await c.post("/api/search", json={"query": "leave"}, headers=auth("ivy"))
        metrics = await c.get("/metrics")
        assert r_id_roundtrip(await c.get("/healthz", headers={"X-Request-ID": "abc-123"}))
    text = metrics.text
    search_ok = 'method="POST",route="/api/search",status="200"'
    assert f"ragkeeper_agent_http_requests_total{{{search_ok}}}" in text
    assert "ragkeeper_agent_retrieval_duration_seconds_bucket" in text
    assert "\nprocess_cpu_seconds_total " in text  # the process's CPU and memory
    assert "\nprocess_resident_memory_bytes " in text
    assert 'ragkeeper_agent_tool_calls_total{outcome="ok",tool="search_documents"}' in text
    promtool = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr


def r_id_roundtrip(response: httpx.Response) -> bool:
    return response.headers.get("x-request-id") == "abc-123"
