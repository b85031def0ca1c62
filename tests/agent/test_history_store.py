"""ConversationStore against real Postgres: one-statement saves, ownership, replay order."""

from __future__ import annotations

import asyncpg
import pytest
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

from ragkeeper_agent.errors import NotFound
from ragkeeper_agent.history import ConversationStore, new_session_id


def turn(question: str, answer: str) -> list[ModelMessage]:
    return [
        ModelRequest(parts=[UserPromptPart(question)]),
        ModelResponse(parts=[ToolCallPart("search_documents", {"query": question}, "c1")]),
        ModelRequest(parts=[ToolReturnPart("search_documents", [{"n": 1}], "c1")]),
        ModelResponse(parts=[TextPart(answer)]),
    ]


@pytest.fixture(scope="module")
def conversations(pool: asyncpg.Pool) -> ConversationStore:
    return ConversationStore(pool)


async def test_save_turn_keeps_order_and_replays_exactly(
    conversations: ConversationStore,
) -> None:
    sid = new_session_id()
    first, second = turn("q1", "a1"), turn("q2", "a2")
    await conversations.save_turn(sid, "ann", first, title="q1")
    await conversations.save_turn(sid, "ann", second, title=None)

    replayed = await conversations.history(sid, "ann")
    assert replayed == first + second
    stored = await conversations.messages(sid, "ann")
    assert [m.role for m in stored] == ["user", "assistant", "tool", "assistant"] * 2
    assert [m.content for m in stored if m.role != "tool"] == ["q1", "", "a1", "q2", "", "a2"]
    conversation = await conversations.get(sid, "ann")
    assert conversation is not None and conversation.title == "q1"


async def test_save_turn_into_someone_elses_conversation_changes_nothing(
    conversations: ConversationStore, pool: asyncpg.Pool
) -> None:
    sid = new_session_id()
    await conversations.save_turn(sid, "ben", turn("mine", "yes"), title="mine")
    before = await pool.fetchrow(
        "SELECT last_message_at, (SELECT count(*) FROM messages WHERE session_id = $1) AS n "
        "FROM conversations WHERE session_id = $1",
        sid,
    )
    with pytest.raises(NotFound):
        await conversations.save_turn(sid, "eve", turn("theirs", "no"), title="theirs")
    after = await pool.fetchrow(
        "SELECT last_message_at, (SELECT count(*) FROM messages WHERE session_id = $1) AS n "
        "FROM conversations WHERE session_id = $1",
        sid,
    )
    assert before is not None and after is not None
    assert dict(after) == dict(before) and after["n"] == 4


async def test_history_is_none_unless_the_caller_owns_the_conversation(
    conversations: ConversationStore,
) -> None:
    sid = new_session_id()
    messages = turn("hello", "hi")
    await conversations.save_turn(sid, "cal", messages, title="hello")
    assert await conversations.history(sid, "dan") is None
    assert await conversations.history(new_session_id(), "cal") is None
    assert await conversations.history(sid, "cal") == messages
