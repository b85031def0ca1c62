"""Conversations and their messages in Postgres, owned by one user each.

Every message is stored as Pydantic AI's own JSON (``ModelMessagesTypeAdapter``),
one ``ModelMessage`` per row, so a conversation replays exactly — tool calls and
their results included — on the next turn, whichever replica serves it. A
readable ``role``/``content`` projection is stored next to it for the history
routes. A turn is saved by one statement at its end: a failed run leaves no
half-turn behind, and the files attached to the turn's question (``attachments.py``) are
written by the same statement. Every read takes the caller's user id and filters by it, so
one user can never see another's conversation (not even its existence).
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolReturnPart,
    UserPromptPart,
)

from .attachments import Attachment, stored_attachment
from .errors import NotFound
from .schemas import AttachmentOut

TITLE_MAX_CHARS = 60


@dataclass(frozen=True, slots=True)
class Conversation:
    session_id: str
    user_id: str
    title: str | None
    created_at: datetime
    last_message_at: datetime


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    role: str
    content: str
    created_at: datetime
    message: dict[str, Any]
    attachments: list[AttachmentOut]
    """The files attached to this message: id, file_name, mime_type, size_bytes."""


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


def make_title(query: str) -> str:
    """A cheap title: the first line of the first question, cut on a word boundary.

    No model call: titles must not cost a second request per conversation, and the
    offline stack has no model to ask.
    """
    line = next((ln for ln in query.strip().splitlines() if ln.strip()), "New conversation")
    line = re.sub(r"\s+", " ", line).strip()
    if len(line) <= TITLE_MAX_CHARS:
        return line
    cut = line[:TITLE_MAX_CHARS].rsplit(" ", 1)[0] or line[:TITLE_MAX_CHARS]
    return cut.rstrip(" ,.;:") + "…"


def _projection(message: ModelMessage) -> tuple[str, str]:
    if isinstance(message, ModelResponse):
        return "assistant", "".join(p.content for p in message.parts if isinstance(p, TextPart))
    # ModelMessage is a two-member union (B101 does not apply).
    assert isinstance(message, ModelRequest)  # nosec B101
    prompts = [p for p in message.parts if isinstance(p, UserPromptPart)]
    if prompts:
        texts = [p.content if isinstance(p.content, str) else "[attachment]" for p in prompts]
        return "user", "\n".join(texts)
    if any(isinstance(p, ToolReturnPart) for p in message.parts):
        return "tool", ""
    return "system", ""


def _instructions_once(messages: Sequence[ModelMessage]) -> list[ModelMessage]:
    """The turn's messages with the run's instructions kept on its first request only.

    Pydantic AI records the instructions on every request of a run (each tool round trip), and
    they hold the conversation's attached files; a replayed history's instructions are not sent
    again (each run sends its own), so the copies would only cost storage and reading.
    """
    kept: list[ModelMessage] = []
    seen = False
    for message in messages:
        if isinstance(message, ModelRequest) and message.instructions is not None:
            if seen:
                message = dataclasses.replace(message, instructions=None)
            seen = True
        kept.append(message)
    return kept


class ConversationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, session_id: str, user_id: str) -> Conversation | None:
        """The conversation if it exists *and* belongs to ``user_id``."""
        row = await self._pool.fetchrow(
            "SELECT session_id, user_id, title, created_at, last_message_at FROM conversations "
            "WHERE session_id = $1 AND user_id = $2",
            session_id,
            user_id,
        )
        return None if row is None else Conversation(**dict(row))

    async def exists(self, session_id: str) -> bool:
        return bool(
            await self._pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM conversations WHERE session_id = $1)", session_id
            )
        )

    async def list_for_user(
        self, user_id: str, *, limit: int = 50, offset: int = 0
    ) -> list[Conversation]:
        rows = await self._pool.fetch(
            "SELECT session_id, user_id, title, created_at, last_message_at FROM conversations "
            "WHERE user_id = $1 AND NOT archived "
            "ORDER BY last_message_at DESC, session_id LIMIT $2 OFFSET $3",
            user_id,
            limit,
            offset,
        )
        return [Conversation(**dict(r)) for r in rows]

    async def history(self, session_id: str, user_id: str) -> list[ModelMessage] | None:
        """Replayable message history of the caller's own conversation (``None``: not theirs).

        One query: ownership check and messages together, aggregated by Postgres into
        one JSON array that Pydantic validates in a single pass.
        """
        raw = await self._pool.fetchval(
            "SELECT (SELECT coalesce(jsonb_agg(m.message ORDER BY m.id), '[]'::jsonb) "
            "FROM messages m WHERE m.session_id = c.session_id)::text "
            "FROM conversations c WHERE c.session_id = $1 AND c.user_id = $2",
            session_id,
            user_id,
        )
        return None if raw is None else ModelMessagesTypeAdapter.validate_json(raw)

    async def messages(self, session_id: str, user_id: str) -> list[StoredMessage]:
        if await self.get(session_id, user_id) is None:
            raise NotFound("no such conversation")
        rows = await self._pool.fetch(_MESSAGES, session_id)
        return [
            StoredMessage(
                id=r["id"],
                role=r["role"],
                content=r["content"],
                created_at=r["created_at"],
                message=json.loads(r["message"]),
                attachments=json.loads(r["attachments"]),
            )
            for r in rows
        ]

    async def attachments(self, session_id: str) -> list[Attachment]:
        """The files attached to a conversation, oldest first (the caller checked that the
        conversation is the user's: ``history`` returned it)."""
        rows = await self._pool.fetch(
            "SELECT id, file_name, mime_type, size_bytes, sha256, sections::text AS sections "
            "FROM attachments WHERE session_id = $1 ORDER BY message_id, position",
            session_id,
        )
        return [stored_attachment({**r, "sections": json.loads(r["sections"])}) for r in rows]

    async def save_turn(
        self,
        session_id: str,
        user_id: str,
        new_messages: Sequence[ModelMessage],
        *,
        title: str | None,
        attachments: Sequence[Attachment] = (),
    ) -> None:
        """Create the conversation if needed and append one turn, atomically.

        One statement (so one round trip, and atomic without an explicit transaction):
        the upsert touches the conversation only if ``user_id`` owns it, and the
        messages are inserted only if it returned a row, in the turn's order; the
        ``attachments`` are kept with the turn's first user message.
        """
        new_messages = _instructions_once(new_messages)
        projections = [_projection(message) for message in new_messages]
        saved = await self._pool.fetchval(
            _SAVE_TURN,
            session_id,
            user_id,
            title,
            [role for role, _ in projections],
            [content for _, content in projections],
            ModelMessagesTypeAdapter.dump_json(list(new_messages)).decode(),
            json.dumps([{**a.as_row(), "position": i} for i, a in enumerate(attachments)]),
        )
        if not saved:
            raise NotFound("no such conversation")


# The messages' ids follow the ORDER BY of the INSERT's SELECT, which keeps the turn's order.
_SAVE_TURN = """
WITH conversation AS (
    INSERT INTO conversations (session_id, user_id, title) VALUES ($1, $2, $3)
    ON CONFLICT (session_id) DO UPDATE SET last_message_at = now()
    WHERE conversations.user_id = EXCLUDED.user_id
    RETURNING session_id
), inserted AS (
    INSERT INTO messages (session_id, role, content, message)
    SELECT c.session_id, p.role, p.content, m.message
    FROM conversation c
    CROSS JOIN unnest($4::text[], $5::text[]) WITH ORDINALITY AS p(role, content, ord)
    JOIN jsonb_array_elements($6::jsonb) WITH ORDINALITY AS m(message, ord) USING (ord)
    ORDER BY ord
    RETURNING id, role
), attached AS (
    INSERT INTO attachments (id, session_id, message_id, position, file_name, mime_type,
                             size_bytes, sha256, sections)
    SELECT a.id, c.session_id, (SELECT min(id) FROM inserted WHERE role = 'user'),
           a.position, a.file_name, a.mime_type, a.size_bytes, a.sha256, a.sections
    FROM conversation c
    CROSS JOIN jsonb_to_recordset($7::jsonb)
        AS a(id text, position integer, file_name text, mime_type text, size_bytes bigint,
             sha256 text, sections jsonb)
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM conversation)
"""

_MESSAGES = """
SELECT m.id, m.role, m.content, m.created_at, m.message,
       coalesce((SELECT jsonb_agg(jsonb_build_object('id', a.id, 'file_name', a.file_name,
                                                     'mime_type', a.mime_type,
                                                     'size_bytes', a.size_bytes)
                                  ORDER BY a.position)
                 FROM attachments a WHERE a.message_id = m.id), '[]'::jsonb)::text AS attachments
FROM messages m WHERE m.session_id = $1 ORDER BY m.id
"""
