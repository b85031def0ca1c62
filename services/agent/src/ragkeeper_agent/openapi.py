"""The OpenAPI document (``GET /openapi.json``): FastAPI's, made to say what the API does.

- Every operation lists the error statuses it answers, each with the one error body
  (:class:`~ragkeeper_agent.schemas.ErrorBody`) and its headers (``Retry-After`` on 429 and
  503, ``WWW-Authenticate`` on 401, ``X-Request-ID`` on every response): the routers and routes
  take them from :func:`responses`, which every status's description comes from.
- The streamed answers list their media types: ``application/x-ndjson`` (the chat route),
  JSON or ``text/event-stream`` (``/v1/chat/completions``), with an ``itemSchema`` per line or
  event (the convention FastAPI's own streams and OpenAPI 3.2 use); the NDJSON ``schema``
  also reads the whole stream as an array of lines. Their items are ``TypedDict`` s in
  ``schemas.py``, which :func:`install` adds to the components.
- Limits that are settings (MAX_QUERY_CHARS) are written into the document when it is built
  (:func:`install`), so the document a running agent serves states its own.

What JSON Schema cannot state is in the request schemas' descriptions and in docs/agent.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from .schemas import (
    MAX_SEARCH_QUERY_CHARS,
    AgentDelta,
    AgentDone,
    AgentFailed,
    ChatCompletionChunk,
    ErrorBody,
    StreamError,
)
from .settings import Settings

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
REF_TEMPLATE = "#/components/schemas/{model}"

STREAMED: tuple[type, ...] = (AgentDelta, AgentDone, AgentFailed, ChatCompletionChunk, StreamError)
"""The items of the streamed answers, which no route names as a model."""

_REQUEST_ID = {
    "X-Request-ID": {
        "description": "the request's id (the caller's own when it is a safe token); logs carry it",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    }
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_BEARER = {
    "WWW-Authenticate": {
        "description": "the scheme to authenticate with",
        "required": True,
        "schema": {"type": "string", "const": "Bearer"},
    }
}

STATUSES: dict[int, tuple[str, dict[str, Any]]] = {
    401: ("No valid bearer token: missing, malformed, expired or not verifiable.", _BEARER),
    403: ("The body's or query's `user_id` is not the token's subject.", {}),
    404: ("No such conversation for this user (another user's looks the same).", {}),
    413: (
        "The body is over MAX_REQUEST_BYTES, or the whole prompt over MAX_PROMPT_CHARS; "
        "`detail` says which.",
        {},
    ),
    422: (
        "A field is refused: the schema, the text rule (any key or string at any depth, "
        "query parameters too) or a limit; `detail` lists the fields.",
        {},
    ),
    429: (
        "Too many requests: the user's window (RATE_LIMIT_PER_MINUTE), or this address's "
        "failed authentications (AUTH_FAILURES_PER_MINUTE).",
        _RETRY_AFTER,
    ),
    502: (
        "The language model's provider refused the request or answered malformed; retrying "
        "will not help.",
        {},
    ),
    503: (
        "A dependency (database, embedding API, model provider, key set) is down, or the "
        "server is shutting down: retry after `Retry-After` seconds.",
        _RETRY_AFTER,
    ),
}

AUTHENTICATED = (401, 413, 422, 429, 503)
"""What every route with a token may answer: its token refused, the body too large, a field
refused, too many failed authentications from the address (or requests from the user), a
dependency down (the failures window and the key set are dependencies)."""


def ref(schema: type) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=schema.__name__)}


def ok(description: str | None = None, **extra: Any) -> dict[str, Any]:
    """A 200 response's documentation beyond FastAPI's: its header, and ``extra`` (``content``
    for media types of its own, ``model``)."""
    response: dict[str, Any] = {"headers": _REQUEST_ID, **extra}
    if description is not None:
        response["description"] = description
    return response


def responses(*statuses: int, success: dict[str, Any] | None = None) -> dict[int | str, Any]:
    """FastAPI ``responses=``: these error statuses, and the 200 (:func:`ok` by default)."""
    documented: dict[int | str, Any] = {200: success or ok()}
    for status in statuses:
        description, headers = STATUSES[status]
        documented[status] = {
            "model": ErrorBody,
            "description": description,
            "headers": {**headers, **_REQUEST_ID},
        }
    return documented


NDJSON_LINE = {"anyOf": [ref(AgentDelta), ref(AgentDone), ref(AgentFailed)]}
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "anyOf": [
                {"type": "string", "const": "[DONE]", "description": "the last event"},
                {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"anyOf": [ref(ChatCompletionChunk), ref(StreamError)]},
                },
            ]
        },
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}
AGENT_STREAM = {
    NDJSON: {"schema": {"type": "array", "items": NDJSON_LINE}, "itemSchema": NDJSON_LINE}
}
EVENT_STREAM = {SSE: {"itemSchema": SSE_EVENT}}


def install(app: FastAPI, settings: Settings) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json``) add the streamed items' schemas and
    this agent's settings to FastAPI's document, once."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()  # FastAPI keeps it as app.openapi_schema
            _add_components(document)
            _state_settings(document, settings)
            return document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way


def _add_components(document: dict[str, Any]) -> None:
    adapters: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = [
        (t.__name__, "serialization", TypeAdapter(t)) for t in STREAMED
    ]
    _, definitions = TypeAdapter.json_schemas(adapters, ref_template=REF_TEMPLATE)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in definitions.get("$defs", {}).items():
        schemas.setdefault(name, schema)


def _state_settings(document: dict[str, Any], settings: Settings) -> None:
    schemas = document["components"]["schemas"]
    limit = settings.max_query_chars
    schemas["AgentRequest"]["properties"]["query"]["maxLength"] = limit
    schemas["SearchRequest"]["properties"]["query"]["maxLength"] = min(
        limit, MAX_SEARCH_QUERY_CHARS
    )
