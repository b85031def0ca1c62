"""The caller's own conversation history (never anyone else's, not even its existence)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from ..deps import PrincipalDep, ServicesDep, acting_user
from ..openapi import AUTHENTICATED, ok, responses
from ..schemas import MAX_ID_CHARS, ConversationOut, MessageOut, SessionId
from ..text import Text

router = APIRouter(responses=responses(*AUTHENTICATED))

MAX_OFFSET = 2**63 - 1
"""The database's bigint: a larger offset cannot even be sent to it."""

# What a listed conversation leads to (OpenAPI links; the first one listed stands for any).
LISTED = "$response.body#/0/session_id"
LINKS = {
    "ReadConversation": {
        "operationId": "conversation_messages_api_conversations__session_id__messages_get",
        "parameters": {"session_id": LISTED},
        "description": "its messages",
    },
    "ContinueConversation": {
        "operationId": "pydantic_agent_api_pydantic_agent_post",
        "requestBody": {"session_id": LISTED},
        "description": "a next question in it",
    },
}


@router.get("/api/conversations", responses=responses(403, success=ok(links=LINKS)))
async def list_conversations(
    principal: PrincipalDep,
    services: ServicesDep,
    user_id: Annotated[Text | None, Query(max_length=MAX_ID_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[ConversationOut]:
    owner = acting_user(principal, user_id)
    rows = await services.conversations.list_for_user(owner, limit=limit, offset=offset)
    return [
        ConversationOut(
            session_id=c.session_id,
            title=c.title,
            created_at=c.created_at,
            last_message_at=c.last_message_at,
        )
        for c in rows
    ]


@router.get("/api/conversations/{session_id}/messages", responses=responses(403, 404))
async def conversation_messages(
    principal: PrincipalDep,
    services: ServicesDep,
    session_id: Annotated[SessionId, Path()],
    user_id: Annotated[Text | None, Query(max_length=MAX_ID_CHARS)] = None,
    include_tools: bool = False,
) -> list[MessageOut]:
    """The conversation's messages; tool calls and results only with ``include_tools``."""
    owner = acting_user(principal, user_id)
    rows = await services.conversations.messages(session_id, owner)
    return [
        MessageOut(
            id=m.id,
            role=m.role,
            content=m.content,
            created_at=m.created_at,
            message=m.message,
            attachments=m.attachments,
        )
        for m in rows
        if include_tools or m.role == "user" or (m.role == "assistant" and m.content)
    ]
