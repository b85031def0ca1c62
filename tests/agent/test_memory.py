"""Long-term memory per user (docs/agent.md, "Memory"): saved by the save tool, recalled into
the instructions of a later turn, listed and forgotten through /api/memories, never shown to
another user, and all of it off with MEMORY_ENABLED=false."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from ragkeeper_agent.agent import (
    MEMORY_HEADER,
    SAVE_MEMORY_TOOL,
    Deps,
    ToolInputError,
    build_agent,
    recall,
    remember,
)
from ragkeeper_agent.extractive import MEMORY_LABEL, recalled_memories, remember_request
from ragkeeper_agent.memory import MemoryFull, MemoryStore
from ragkeeper_agent.tabular import ReadOnlySQL
from ragkeeper_knowledge import KnowledgeStore
from ragkeeper_knowledge.embedding import HashingEmbedder

from .conftest import auth, tool_returns

FACT = "my team is Falcon"
QUESTION = "What is my team?"


def deps(
    store: KnowledgeStore,
    embedder: HashingEmbedder,
    pool: asyncpg.Pool,
    user_id: str | None,
    *,
    memory: bool = True,
    max_per_user: int = 500,
) -> Deps:
    return Deps(
        store=store,
        embedder=embedder,
        sql=ReadOnlySQL(pool, timeout_ms=500, max_rows=50),
        memory=MemoryStore(pool, max_per_user) if memory else None,
        user_id=user_id,
        session_id="s-memory",
    )


async def _run(agent_deps: Deps, prompt: str, save: str | None = None) -> AgentInfo:
    """One run whose model saves ``save`` (if given), then answers; the last AgentInfo."""
    seen: list[AgentInfo] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(info)
        if save is not None and len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart(SAVE_MEMORY_TOOL, {"text": save})])
        return ModelResponse(parts=[TextPart("ok")])

    result = await build_agent(FunctionModel(model)).run(prompt, deps=agent_deps)
    if save is not None:
        assert [p.content for p in tool_returns(result.all_messages())] == [f"Remembered: {save}"]
    return seen[-1]


async def test_a_memory_is_recalled_later_for_its_user_only(
    seeded: KnowledgeStore, embedder: HashingEmbedder, pool: asyncpg.Pool
) -> None:
    await _run(deps(seeded, embedder, pool, "mem-alice"), "note this", save=FACT)
    alice = await _run(deps(seeded, embedder, pool, "mem-alice"), QUESTION)
    assert SAVE_MEMORY_TOOL in [t.name for t in alice.function_tools]
    assert recalled_memories(alice.instructions) == [FACT]
    bob = await _run(deps(seeded, embedder, pool, "mem-bob"), QUESTION)
    assert MEMORY_HEADER not in (bob.instructions or "")
    assert await recall(deps(seeded, embedder, pool, "mem-bob"), QUESTION, min_similarity=-1) == []
    # An unrelated question recalls nothing.
    other = await _run(deps(seeded, embedder, pool, "mem-alice"), "annual leave carry over")
    assert MEMORY_HEADER not in (other.instructions or "")


async def test_saving_again_refreshes_one_row_and_bad_text_is_retried(
    seeded: KnowledgeStore, embedder: HashingEmbedder, pool: asyncpg.Pool
) -> None:
    run_deps = deps(seeded, embedder, pool, "mem-carol")
    first = await remember(run_deps, "I  prefer answers in French")
    again = await remember(run_deps, "I prefer answers in French")
    assert (again.id, again.content) == (first.id, "I prefer answers in French")
    assert again.updated_at >= first.updated_at
    for bad in ("   ", "x" * 501):
        with pytest.raises(ToolInputError):
            await remember(run_deps, bad)


async def test_without_memory_no_tool_is_offered_and_nothing_recalled(
    seeded: KnowledgeStore, embedder: HashingEmbedder, pool: asyncpg.Pool
) -> None:
    for off in (
        deps(seeded, embedder, pool, "mem-alice", memory=False),
        deps(seeded, embedder, pool, None),
    ):
        info = await _run(off, QUESTION)
        names = [t.name for t in info.function_tools]
        assert SAVE_MEMORY_TOOL not in names and "search_memories" not in names
        assert "save_memory" not in (info.instructions or "")
        with pytest.raises(ToolInputError, match="MEMORY_ENABLED"):
            await remember(off, FACT)


@pytest.mark.parametrize(
    ("message", "fact"),
    [
        ("remember that my team is Falcon.", "my team is Falcon"),
        ("Please remember: I prefer short answers", "I prefer short answers"),
        ("Remember my desk is 4B", "my desk is 4B"),
        ("Do you remember my team?", None),
        ("remember that what?", None),
        ("How do I remember passwords", None),
    ],
)
def test_the_offline_model_knows_a_remember_message(message: str, fact: str | None) -> None:
    assert remember_request(message) == fact


async def _ask(client: httpx.AsyncClient, user: str, query: str) -> str:
    r = await client.post("/api/pydantic-agent", json={"query": query}, headers=auth(user))
    assert r.status_code == 200, r.text
    final = json.loads(r.text.splitlines()[-1])
    assert final["complete"] is True, final
    return str(final["text"])


async def test_offline_remember_recall_list_and_delete_over_http(
    server_factory: Callable[..., Any],
) -> None:
    async with server_factory() as server, server.client() as c:
        saved = await _ask(c, "web-alice", "Remember that my team is Falcon")
        assert "Remembered: my team is Falcon" in saved
        answer = await _ask(c, "web-alice", QUESTION)
        assert f"{MEMORY_LABEL}:\n- my team is Falcon" in answer
        assert "Falcon" not in await _ask(c, "web-bob", QUESTION)

        listed = (await c.get("/api/memories", headers=auth("web-alice"))).json()
        assert [m["content"] for m in listed] == ["my team is Falcon"]
        assert listed[0]["session_id"]
        assert (await c.get("/api/memories", headers=auth("web-bob"))).json() == []
        memory_id = listed[0]["id"]
        # Someone else's memory does not exist for bob, and asking for alice's is 403.
        r = await c.delete(f"/api/memories/{memory_id}", headers=auth("web-bob"))
        assert r.status_code == 404
        r = await c.get("/api/memories?user_id=web-alice", headers=auth("web-bob"))
        assert r.status_code == 403
        r = await c.delete(f"/api/memories/{memory_id}", headers=auth("web-alice"))
        assert r.json() == {"id": memory_id, "deleted": True}
        assert (await c.get("/api/memories", headers=auth("web-alice"))).json() == []
        r = await c.delete(f"/api/memories/{memory_id}", headers=auth("web-alice"))
        assert r.status_code == 404
        assert "Falcon" not in await _ask(c, "web-alice", QUESTION)


async def test_memory_off_routes_404_and_nothing_is_saved(
    server_factory: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    async with server_factory(memory_enabled=False) as server, server.client() as c:
        r = await c.get("/api/memories", headers=auth("off-alice"))
        assert r.status_code == 404
        assert "MEMORY_ENABLED" in r.json()["detail"]
        assert (await c.delete("/api/memories/1", headers=auth("off-alice"))).status_code == 404
        answer = await _ask(c, "off-alice", "Remember that my team is Falcon")
        assert "Remembered" not in answer
    assert await pool.fetchval("SELECT count(*) FROM memories WHERE user_id = 'off-alice'") == 0


async def test_a_full_memory_refuses_new_facts_and_keeps_every_old_one(
    seeded: KnowledgeStore, embedder: HashingEmbedder, pool: asyncpg.Pool
) -> None:
    from types import SimpleNamespace

    from ragkeeper_agent.agent import save_memory

    alice = deps(seeded, embedder, pool, "full-alice", max_per_user=2)
    for fact in ("my team is Falcon", "answer in French"):
        await remember(alice, fact)
    with pytest.raises(MemoryFull):
        await remember(alice, "my desk is on floor 3")
    await remember(alice, "my team is Falcon")  # saying a kept one again still refreshes it
    # The tool tells the model (and the offline answer tells the user) what to do.
    said = await save_memory(SimpleNamespace(deps=alice), "my desk is on floor 3")  # type: ignore[arg-type]
    assert said.startswith("Not remembered: the memory is full (2 kept)")
    kept = await MemoryStore(pool).list_for_user("full-alice")
    assert sorted(m.content for m in kept) == ["answer in French", "my team is Falcon"]
    # Another user's memory is their own.
    await remember(
        deps(seeded, embedder, pool, "full-bob", max_per_user=2), "my desk is on floor 3"
    )
