"""``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI Chat Completions API.

Existing OpenAI clients and chat UIs can point their base URL at the agent. The
conversation comes in the request (that API is stateless), so nothing is
persisted here: earlier turns become replayed history, system/developer messages
become system prompt parts, and the last user message is the prompt. Streaming
uses server-sent events with ``chat.completion.chunk`` objects and ``[DONE]``;
usage is in the non-streaming body and, when ``stream_options.include_usage``
is set, in a last chunk with no choices (as OpenAI does).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.usage import RunUsage

from ..chat import (
    TextDelta,
    TurnInterrupted,
    TurnResult,
    check_prompt_size,
    describe_failure,
    start_turn,
)
from ..deps import Acting, PrincipalDep, RateLimit, ServicesDep
from ..errors import too_long
from ..openapi import AUTHENTICATED, EVENT_STREAM, SSE, ok, responses
from ..schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChunkChoice,
    Delta,
    ModelList,
    StreamError,
    Usage,
)
from ..tracing import identify

router = APIRouter(responses=responses(*AUTHENTICATED))

PUBLIC_MODEL_ID = "ragkeeper"


def to_history(messages: list[ChatMessage]) -> tuple[list[ModelMessage], str]:
    """OpenAI messages -> (Pydantic AI history, final user prompt)."""
    history: list[ModelMessage] = []
    for m in messages[:-1]:
        text = m.text()
        if m.role in ("system", "developer"):
            history.append(ModelRequest(parts=[SystemPromptPart(text)]))
        elif m.role == "user":
            history.append(ModelRequest(parts=[UserPromptPart(text)]))
        elif m.role == "assistant" and text:
            history.append(ModelResponse(parts=[TextPart(text)]))
        # Tool messages belong to the client's own tools, which this agent does not run.
    return history, messages[-1].text()


def usage_out(usage: RunUsage) -> Usage:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


@router.get("/v1/models")
async def list_models(principal: PrincipalDep) -> ModelList:
    return {
        "object": "list",
        "data": [{"id": PUBLIC_MODEL_ID, "object": "model", "created": 0, "owned_by": "ragkeeper"}],
    }


async def completion_request(
    body: ChatCompletionRequest, principal: PrincipalDep, services: ServicesDep
) -> Acting[ChatCompletionRequest]:
    """The caller (the body's ``user`` only with auth disabled) and a prompt within the limits:
    the last message (422) and all messages together (413)."""
    user_id = principal.user_id if principal.authenticated else body.user or principal.user_id
    if len(body.messages[-1].text()) > services.settings.max_query_chars:
        last = ("body", "messages", len(body.messages) - 1, "content")
        raise too_long(last, services.settings.max_query_chars, "MAX_QUERY_CHARS")
    history, prompt = to_history(body.messages)
    check_prompt_size(prompt, history, limit=services.settings.max_prompt_chars)
    return Acting(user_id, body)


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses=responses(
        502,
        success=ok(
            "JSON, or with `stream` true server-sent events: chunks, then `data: [DONE]`.",
            model=ChatCompletion,
            content=EVENT_STREAM,
        ),
    ),
)
async def chat_completions(
    admitted: Annotated[Acting[ChatCompletionRequest], Depends(RateLimit(completion_request))],
    services: ServicesDep,
) -> JSONResponse | StreamingResponse:
    body = admitted.body
    identify(admitted.user_id)  # the OpenAI API has no conversation id: no session
    history, prompt = to_history(body.messages)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = body.model or PUBLIC_MODEL_ID
    stream = services.runner.stream(prompt, history=history, deps=services.deps())
    first, rest = await start_turn(stream)
    if not body.stream:
        return await _complete(first, rest, completion_id, created, model)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _sse(first, rest, completion_id, created, model, include_usage),
        media_type=SSE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _drain(
    first: TextDelta | TurnResult, rest: AsyncGenerator[TextDelta | TurnResult]
) -> AsyncIterator[TextDelta | TurnResult]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()


async def _complete(
    first: TextDelta | TurnResult,
    rest: AsyncGenerator[TextDelta | TurnResult],
    completion_id: str,
    created: int,
    model: str,
) -> JSONResponse:
    result: TurnResult | None = None
    try:
        async for item in _drain(first, rest):
            if isinstance(item, TurnResult):
                result = item
    except Exception as exc:
        raise describe_failure(exc) from exc
    # The run ends with a result (B101 does not apply).
    assert result is not None  # nosec B101
    answer: ChatCompletion = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.output},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage_out(result.usage),
    }
    return JSONResponse(answer)


def _event(payload: Mapping[str, object] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


async def _sse(
    first: TextDelta | TurnResult,
    rest: AsyncGenerator[TextDelta | TurnResult],
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> bytes:
        event: ChatCompletionChunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if usage is not None:
            event["usage"] = usage
        return _event(event)

    def delta(content: Delta, finish: Literal["stop"] | None = None) -> bytes:
        return chunk([{"index": 0, "delta": content, "finish_reason": finish, "logprobs": None}])

    def failed(message: str, kind: str) -> bytes:
        error: StreamError = {"error": {"message": message, "type": kind}}
        return _event(error)

    yield delta({"role": "assistant", "content": ""})
    try:
        async for item in _drain(first, rest):
            if isinstance(item, TextDelta):
                yield delta({"content": item.text})
            else:
                yield delta({}, finish="stop")
                if include_usage:
                    yield chunk([], usage_out(item.usage))
    except TurnInterrupted:
        yield failed("the server is shutting down", "unavailable")
    except Exception as exc:
        error = describe_failure(exc)
        yield failed(str(error), type(error).__name__)
    yield _event("[DONE]")
