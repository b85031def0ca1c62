"""``POST /api/pydantic-agent``: the streaming chat route (newline-delimited JSON).

The route and its cumulative ``text`` field are kept compatible with existing
clients of the earlier docker-compose deployment's API. Each line is
``{"text": <answer so far>, "delta": <new text>}`` as tokens arrive, then one
final ``{"text": <answer>, "session_id": ..., "complete": true}`` (plus
``conversation_title`` for a new conversation, ``sources`` and, when the question
carried files, ``attachments``). ``text`` is always the exact answer so far and each line
is flushed as it is produced. Files in ``files`` are read by ``attachments.py`` before the
turn starts; the text of every file attached to the conversation so far is given to the
model at each turn, numbered for citation before the search's passages.
Failures before the first token are real HTTP statuses; after it, a final
``{"error": ..., "complete": true, "status": ...}`` line, ``status`` being the HTTP status the
failure would have had (503: a dependency is down, retry shortly).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic_ai.messages import ModelMessage, UserContent

from ..attachments import Attachment, passages, read_attachments, text_chars
from ..chat import (
    TextDelta,
    TurnInterrupted,
    TurnResult,
    check_prompt_size,
    describe_failure,
    start_turn,
)
from ..deps import Acting, PrincipalDep, RateLimit, ServicesDep, acting_user
from ..errors import NotFound, too_long
from ..history import make_title, new_session_id
from ..metrics import CONVERSATIONS_CREATED
from ..openapi import AGENT_STREAM, AUTHENTICATED, NDJSON, ok, responses
from ..schemas import AgentDone, AgentRequest, SourceOut
from ..services import Services
from ..tracing import identify

logger = logging.getLogger(__name__)
router = APIRouter(responses=responses(*AUTHENTICATED))


def _line(payload: Mapping[str, object]) -> bytes:
    return (json.dumps(payload, ensure_ascii=False) + "\n").encode()


def build_prompt(query: str, attachments: Sequence[Attachment]) -> str | list[UserContent]:
    """The question, with the images that go to a vision model as image parts (the files'
    text reaches the model in the instructions, ``agent.attachment_instructions``)."""
    images = [part for a in attachments if (part := a.image_part()) is not None]
    return [query, *images] if images else query


def sources_out(result: TurnResult) -> list[SourceOut]:
    return [
        {
            "n": p.n,
            "document_id": p.document_id,
            "title": p.title,
            "url": p.url,
            "content": p.content,
        }
        for p in result.sources
    ]


async def chat_request(
    body: AgentRequest, principal: PrincipalDep, services: ServicesDep
) -> Acting[AgentRequest]:
    """The turn's user (403 for someone else's ``user_id``) and a query within the limit."""
    user_id = acting_user(principal, body.user_id)
    if len(body.query) > services.settings.max_query_chars:
        raise too_long(("body", "query"), services.settings.max_query_chars, "MAX_QUERY_CHARS")
    return Acting(user_id, body)


@router.post(
    "/api/pydantic-agent",
    response_class=StreamingResponse,  # no media type: the errors' bodies stay JSON
    responses=responses(
        403,
        404,
        502,
        success=ok("The answer as it is written, one JSON object a line.", content=AGENT_STREAM),
    ),
)
async def pydantic_agent(
    admitted: Annotated[Acting[AgentRequest], Depends(RateLimit(chat_request))],
    services: ServicesDep,
) -> StreamingResponse:
    body, user_id = admitted.body, admitted.user_id
    session_id = body.session_id or new_session_id()
    identify(user_id, session_id)
    history: list[ModelMessage] | None = None
    if body.session_id:
        history = await services.conversations.history(session_id, user_id)
        if history is None and await services.conversations.exists(session_id):
            raise NotFound("no such conversation")
    title = make_title(body.query) if history is None else None
    attached = await read_attachments(body.files, services.settings) if body.files else []
    earlier = await services.conversations.attachments(session_id) if history is not None else []
    prompt = build_prompt(body.query, attached)
    check_prompt_size(
        prompt,
        history or [],
        limit=services.settings.max_prompt_chars,
        extra_chars=text_chars([*earlier, *attached]),
    )

    deps = services.deps(user_id, session_id)
    deps.attachments = passages([*earlier, *attached], deps.sources)
    stream = services.runner.stream(prompt, history=history or [], deps=deps)
    first, rest = await start_turn(stream)
    turn = Turn(user_id=user_id, session_id=session_id, title=title, attachments=attached)
    return StreamingResponse(
        _ndjson(services, first, rest, turn),
        media_type=NDJSON,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@dataclass(frozen=True, slots=True)
class Turn:
    """What the stream saves at its end besides the answer."""

    user_id: str
    session_id: str
    title: str | None
    """A new conversation's title (None: the conversation exists)."""
    attachments: list[Attachment]
    """The files of this turn's question."""


async def _ndjson(
    services: Services,
    first: TextDelta | TurnResult,
    rest: AsyncGenerator[TextDelta | TurnResult],
    turn: Turn,
) -> AsyncIterator[bytes]:
    user_id, session_id, title = turn.user_id, turn.session_id, turn.title
    text = ""
    result: TurnResult | None = None
    try:
        item: TextDelta | TurnResult | None = first
        while item is not None:
            if isinstance(item, TextDelta):
                text += item.text
                yield _line({"text": text, "delta": item.text})
            else:
                result = item
            item = await anext(rest, None)
        # The stream ends with a result (B101 does not apply).
        assert result is not None  # nosec B101
        await services.conversations.save_turn(
            session_id, user_id, result.new_messages, title=title, attachments=turn.attachments
        )
        if title is not None:
            CONVERSATIONS_CREATED.inc()
        final: AgentDone = {
            "text": result.output,
            "session_id": session_id,
            "complete": True,
            "sources": sources_out(result),
        }
        if title is not None:
            final["conversation_title"] = title
        if turn.attachments:
            final["attachments"] = [a.summary() for a in turn.attachments]
        yield _line(final)
    except TurnInterrupted:
        yield _line(
            {"error": "the server is shutting down; please retry", "complete": True, "status": 503}
        )
    except Exception as exc:
        logger.exception("chat stream failed after it started")
        error = describe_failure(exc)
        yield _line(
            {
                "error": str(error),
                "complete": True,
                "status": error.status_code,
                "session_id": session_id,
            }
        )
    finally:
        await rest.aclose()
