"""MAX_PROMPT_CHARS bounds everything a turn sends the model, not only the last question.

Each message here is within MAX_QUERY_CHARS on its own; what is refused (413, with the reason)
is the sum: system and earlier messages on the OpenAI-compatible route, the stored conversation
and inlined attachments on the NDJSON route.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from .conftest import RunningServer, auth

QUERY_LIMIT = 200
PROMPT_LIMIT = 600


@pytest.fixture(scope="module")
async def limited(server_factory: Callable[..., Any]) -> AsyncIterator[RunningServer]:
    async with server_factory(max_query_chars=QUERY_LIMIT, max_prompt_chars=PROMPT_LIMIT) as srv:
        yield srv


def _refused(response: Any) -> None:
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert "MAX_PROMPT_CHARS" in detail and f"limit of {PROMPT_LIMIT}" in detail


def _conversation(system_chars: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "s" * system_chars},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "a" * 150},
        {"role": "user", "content": "When must lost devices be reported?"},
    ]


async def test_openai_route_counts_system_and_history(limited: RunningServer) -> None:
    async with limited.client() as c:
        small = await c.post(
            "/v1/chat/completions", json={"messages": _conversation(150)}, headers=auth("pia")
        )
        assert small.status_code == 200, small.text
        assert "within one hour" in small.json()["choices"][0]["message"]["content"]
        for system_chars in (QUERY_LIMIT - 1, 450):
            big = await c.post(
                "/v1/chat/completions",
                json={"messages": _conversation(system_chars) * 2},
                headers=auth("pia"),
            )
            _refused(big)


async def _turn(c: Any, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]] | str]:
    r = await c.post("/api/pydantic-agent", json=body, headers=auth("quinn"))
    if r.status_code != 200:
        return r.status_code, r.text
    return 200, [json.loads(line) for line in r.text.splitlines()]


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/api/pydantic-agent", {"query": "q" * (QUERY_LIMIT + 1)}, ["body", "query"]),
        ("/api/search", {"query": "q" * (QUERY_LIMIT + 1)}, ["body", "query"]),
        (
            "/v1/chat/completions",
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "q" * 201},
                ]
            },
            ["body", "messages", 1, "content"],
        ),
    ],
)
async def test_a_question_over_max_query_chars_is_a_field_error(
    limited: RunningServer, path: str, body: dict[str, Any], loc: list[Any]
) -> None:
    """422 naming the field, in the shape of every other 422 (the document's ErrorBody)."""
    async with limited.client() as c:
        r = await c.post(path, json=body, headers=auth("pia"))
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == loc
    assert error["type"] == "string_too_long"
    assert error["ctx"] == {"max_length": QUERY_LIMIT}
    assert "MAX_QUERY_CHARS" in error["msg"]


async def test_native_route_counts_the_stored_conversation(limited: RunningServer) -> None:
    question = {"query": "How many days of paid annual leave?", "user_id": "quinn"}
    async with limited.client() as c:
        status, lines = await _turn(c, question)
        assert status == 200 and isinstance(lines, list)
        session_id = lines[-1]["session_id"]
        # The first turn's question, tool call, passages and answer are now its history.
        r = await c.post(
            "/api/pydantic-agent",
            json={**question, "session_id": session_id},
            headers=auth("quinn"),
        )
        _refused(r)
        status, _ = await _turn(c, question)  # a new conversation still works
        assert status == 200


async def test_native_route_counts_inlined_attachments(limited: RunningServer) -> None:
    note = base64.b64encode(b"n" * PROMPT_LIMIT).decode()
    body = {
        "query": "Summarise the note",
        "user_id": "quinn",
        "files": [{"fileName": "note.txt", "content": note, "mimeType": "text/plain"}],
    }
    async with limited.client() as c:
        r = await c.post("/api/pydantic-agent", json=body, headers=auth("quinn"))
        _refused(r)
        body["files"][0]["content"] = base64.b64encode(b"n" * 100).decode()
        r = await c.post("/api/pydantic-agent", json=body, headers=auth("quinn"))
        assert r.status_code == 200, r.text
