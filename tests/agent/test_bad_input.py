"""Bad input is the caller's error: 4xx with the field named, never 5xx, on every route.

The accepted text is defined once (``ragkeeper_agent.text``): no NUL, no lone surrogate, no
C0 control but tab, line feed and carriage return, JSON at most 32 levels deep, and each
field's length limit. The route walk below fails for a route of the app that has no case here,
so a new route is not forgotten. Bodies are sent as raw bytes, so a lone surrogate arrives as
JSON spells it (``"\\ud800"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from pydantic import ValidationError

from ragkeeper_agent import create_app
from ragkeeper_agent.schemas import ChatCompletionRequest, SearchRequest
from ragkeeper_agent.text import MAX_JSON_DEPTH, json_may_be_refused, json_problems, text_problem

from .conftest import RunningServer, auth, settings_for

HOLE = "@@"  # where a case's value goes in its body or URL


@dataclass(frozen=True)
class Case:
    """One input of one route: a JSON body with the value at ``HOLE`` or a URL with it there."""

    method: str
    url: str
    field: str  # the name the error must mention
    body: str | None = None  # JSON text; HOLE is replaced by a JSON value
    long: int = 10_000  # characters over the field's limit

    @property
    def in_body(self) -> bool:
        return self.body is not None


CASES: dict[str, list[Case]] = {
    "/api/search": [
        Case("POST", "/api/search", "query", '{"query": @@}'),
        Case("POST", "/api/search", "pipeline_id", '{"query": "leave", "pipeline_id": @@}', 300),
        Case(
            "POST",
            "/api/search",
            "metadata_filter",
            '{"query": "leave", "metadata_filter": {"title": @@}}',
            3000,
        ),
    ],
    "/api/pydantic-agent": [
        Case("POST", "/api/pydantic-agent", "query", '{"query": @@}'),
        Case("POST", "/api/pydantic-agent", "user_id", '{"query": "leave?", "user_id": @@}', 300),
        Case("POST", "/api/pydantic-agent", "session_id", '{"query": "x", "session_id": @@}', 300),
        Case(
            "POST",
            "/api/pydantic-agent",
            "fileName",
            '{"query": "x", "files": [{"fileName": @@, "content": "aGk="}]}',
            300,
        ),
    ],
    "/v1/chat/completions": [
        Case(
            "POST",
            "/v1/chat/completions",
            "content",
            '{"messages": [{"role": "user", "content": @@}]}',
        ),
        Case(
            "POST",
            "/v1/chat/completions",
            "content",
            '{"messages": [{"role": "user", "content": [{"type": "text", "text": @@}]}]}',
        ),
        Case(
            "POST",
            "/v1/chat/completions",
            "model",
            '{"model": @@, "messages": [{"role": "user", "content": "hi"}]}',
            300,
        ),
    ],
    "/api/conversations": [Case("GET", f"/api/conversations?user_id={HOLE}", "user_id", long=300)],
    "/api/conversations/{session_id}/messages": [
        Case("GET", f"/api/conversations/{HOLE}/messages", "session_id", long=300)
    ],
    "/api/memories": [Case("GET", f"/api/memories?user_id={HOLE}", "user_id", long=300)],
    "/api/memories/{memory_id}": [
        Case("DELETE", f"/api/memories/1?user_id={HOLE}", "user_id", long=300)
    ],
}
# Routes whose only input is the URL's query string, which the text rule covers on every route
# (test_a_bad_query_parameter_is_refused_on_every_route).
NO_FIELDS = {
    "/healthz": "no input",
    "/readyz": "no input",
    "/metrics": "no input",
    "/": "no input",
    "/web-config.json": "no input",
    "/static": "a file name: StaticFiles answers 404 for a name it does not serve",
    "/openapi.json": "no input",
    "/docs": "no input",
    "/docs/oauth2-redirect": "no input",
    "/redoc": "no input",
    "/v1/models": "no input",
    "/mcp": "JSON-RPC: the text rule and the depth limit refuse its body with 422 as every "
    "route's; argument limits are its tools' input schemas, refused as tool errors (MCP), "
    "test_mcp.py",
}

# kind -> (JSON value, URL text, the words the error must contain)
KINDS: dict[str, tuple[str, str, str]] = {
    "nul": ('"a\\u0000b"', "a%00b", "NUL"),
    "surrogate": ('"a\\ud800b"', "a%ED%A0%80b", "surrogate"),
    "control": ('"a\\u0007b"', "a%07b", "U+0007"),
    "overlong": ("", "", ""),
    "deep": ("[" * 200 + "]" * 200, "", "levels deep"),
}


def _app_paths() -> set[str]:
    app = create_app(settings_for("postgresql://unused/db"))
    return {str(route.path) for route in iter_route_contexts(app.routes)}


def test_every_route_has_a_bad_input_case() -> None:
    paths = _app_paths()
    assert paths - CASES.keys() - NO_FIELDS.keys() == set(), "add bad-input cases for these"
    assert (CASES.keys() | NO_FIELDS.keys()) - paths == set(), "cases for routes the app lacks"


def _params() -> list[Any]:
    params = []
    for cases in CASES.values():
        for case in cases:
            for kind in KINDS:
                if kind == "deep" and not case.in_body:
                    continue
                params.append(
                    pytest.param(case, kind, id=f"{case.method} {case.url} {case.field} {kind}")
                )
    return params


def _request(case: Case, kind: str) -> tuple[str, bytes | None]:
    value, url_text, _ = KINDS[kind]
    if kind == "overlong":
        value, url_text = json.dumps("a" * case.long), "a" * case.long
    if case.body is None:
        return case.url.replace(HOLE, url_text), None
    return case.url, case.body.replace(HOLE, value).encode()


async def _send(c: httpx.AsyncClient, method: str, url: str, body: bytes | None) -> httpx.Response:
    headers = {**auth("bad-input"), "content-type": "application/json"}
    return await c.request(method, url, content=body, headers=headers)


async def _still_serves(c: httpx.AsyncClient) -> None:
    r = await _send(c, "POST", "/api/search", b'{"query": "annual leave"}')
    assert r.status_code == 200, r.text
    assert r.json()


@pytest.mark.parametrize(("case", "kind"), _params())
async def test_bad_input_is_a_4xx_naming_the_field(
    server: RunningServer, case: Case, kind: str
) -> None:
    url, body = _request(case, kind)
    async with server.client() as c:
        r = await _send(c, case.method, url, body)
        assert 400 <= r.status_code < 500, r.text
        assert r.headers["content-type"].startswith("application/json")
        text = json.dumps(r.json())
        if not (kind == "surrogate" and not case.in_body):
            assert case.field in text, text
        words = KINDS[kind][2]
        if kind == "surrogate" and not case.in_body:
            words = ""  # a URL's invalid UTF-8 arrives as U+FFFD, which is text
        assert words in text, text
        await _still_serves(c)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"query": "x", "metadata_filter": {"a\\u0000": "b"}}', "metadata_filter"),
        ('{"query": "x", "metadata_filter": {"a": "b\\u0000"}}', "metadata_filter"),
        ('{"query": "x", "metadata_filter": {"a": ["ok", {"b": "\\u0000"}]}}', "metadata_filter"),
        ('{"query": "x", "metadata_filter": {"\\ud800": 1}}', "metadata_filter"),
        ('{"query": "x", "pipeline_id": "default/\\u0000"}', "pipeline_id"),
        ('{"query": "x", "k": 5, "unknown": "\\u0000"}', "unknown"),
    ],
)
async def test_search_refuses_nul_in_filter_and_pipeline(
    server: RunningServer, body: str, where: str
) -> None:
    async with server.client() as c:
        r = await _send(c, "POST", "/api/search", body.encode())
        assert r.status_code == 422, r.text
        [error] = r.json()["detail"]
        assert error["loc"][:2] == ["body", where]
        assert where in error["msg"]
        await _still_serves(c)


TOOL_CALL = (
    '{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",'
    ' "function": {"name": "lookup", "arguments": "{\\"q\\": \\"\\u0000\\"}"}}]}'
)


@pytest.mark.parametrize(
    ("messages", "loc"),
    [
        (
            '[{"role": "system", "content": "be\\u0000brief"}, {"role": "user", "content": "hi"}]',
            ["body", "messages", 0, "content"],
        ),
        (
            f'[{TOOL_CALL}, {{"role": "user", "content": "hi"}}]',
            ["body", "messages", 0, "tool_calls", 0, "function", "arguments"],
        ),
        (
            '[{"role": "tool", "tool_call_id": "c1", "content": "\\u0000"},'
            ' {"role": "user", "content": "hi"}]',
            ["body", "messages", 0, "content"],
        ),
        (
            '[{"role": "user", "name": "a\\u0000", "content": "hi"}]',
            ["body", "messages", 0, "name"],
        ),
        (
            '[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "\\ud800"}}]}]',
            ["body", "messages", 0, "content", 0, "image_url", "url"],
        ),
    ],
)
async def test_openai_route_refuses_bad_text_in_any_message_part(
    server: RunningServer, messages: str, loc: list[Any]
) -> None:
    async with server.client() as c:
        body = f'{{"messages": {messages}}}'.encode()
        r = await _send(c, "POST", "/v1/chat/completions", body)
        assert r.status_code == 422, r.text
        assert [e["loc"] for e in r.json()["detail"]] == [loc]
        await _still_serves(c)


def _nested(depth: int) -> str:
    return '{"query": "x", "metadata_filter": {"a": ' + "[" * depth + "]" * depth + "}}"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 200, 500_000])
async def test_deep_json_is_refused(server: RunningServer, depth: int) -> None:
    async with server.client() as c:
        r = await _send(c, "POST", "/api/search", _nested(depth).encode())
        assert r.status_code == 422, r.text[:300]
        assert "levels deep" in r.text
        unclosed = b'{"query": "x", "metadata_filter": {"a": ' + b"[" * 500_000
        r = await _send(c, "POST", "/api/search", unclosed)
        assert 400 <= r.status_code < 500
        await _still_serves(c)


async def test_a_bad_query_parameter_is_refused_on_every_route(server: RunningServer) -> None:
    async with server.client() as c:
        for path in sorted(_app_paths()):
            url = path.replace("{session_id}", "s1") + "?note=a%00b"
            r = await c.get(url, headers=auth("bad-input"))
            assert r.status_code == 422, (path, r.text)
            assert r.json()["detail"][0]["loc"] == ["query", "note"]


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (b'{"query": "\xff"}', "utf-8"),
        ('{"query": "leave"}'.encode("utf-16-le")[:-1], "utf-16-le"),  # cut mid-character
    ],
)
async def test_a_body_that_is_not_text_is_refused(
    server: RunningServer, body: bytes, encoding: str
) -> None:
    """A JSON body the parser cannot decode is malformed JSON: 422, like any other (not
    FastAPI's bare 400); one it can decode that spells a lone surrogate is the text rule's."""
    async with server.client() as c:
        r = await _send(c, "POST", "/api/search", body)
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body"]
        assert error["type"] == "json_invalid"
        assert encoding in error["msg"]
        encoded_surrogate = b'{"query": "a\xed\xa0\x80b"}'
        r = await _send(c, "POST", "/api/search", encoded_surrogate)
        assert r.status_code == 422 and "surrogate" in r.text, r.text
        await _still_serves(c)


async def test_an_offset_the_database_cannot_take_is_refused(server: RunningServer) -> None:
    async with server.client() as c:
        for offset, status in ((2**63 - 1, 200), (2**63, 422)):
            r = await c.get(f"/api/conversations?offset={offset}", headers=auth("bad-input"))
            assert r.status_code == status, r.text


async def test_good_text_passes(server: RunningServer) -> None:
    """Tabs, newlines, carriage returns and characters outside the BMP (a surrogate pair in
    JSON) are text; so is JSON exactly as deep as the limit."""
    async with server.client() as c:
        r = await _send(
            c, "POST", "/api/search", b'{"query": "annual\\tleave\\r\\n\\ud83d\\ude00"}'
        )
        assert r.status_code == 200, r.text
        inner = "[" * (MAX_JSON_DEPTH - 3) + "]" * (MAX_JSON_DEPTH - 3)
        body = '{"query": "leave", "metadata_filter": {"a": ' + inner + "}}"
        r = await _send(c, "POST", "/api/search", body.encode())
        assert r.status_code == 200, r.text
        good_call = TOOL_CALL.replace("\\u0000", "x")
        messages = f'[{good_call}, {{"role": "user", "content": "leave?"}}]'
        r = await _send(c, "POST", "/v1/chat/completions", f'{{"messages": {messages}}}'.encode())
        assert r.status_code == 200, r.text


def test_the_rule() -> None:
    assert text_problem("tab\tline\ncr\r é 😀") is None
    assert "NUL" in (text_problem("a\x00") or "")
    assert "surrogate" in (text_problem("a\udfff") or "")
    assert "U+001F" in (text_problem("\x1f") or "")
    assert not json_may_be_refused(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}')
    assert not json_may_be_refused(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert json_may_be_refused(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert json_may_be_refused(b'{"a": "\\u001F"}') and json_may_be_refused(b'["\xed\xa0\x80"]')
    assert not json_may_be_refused(b'{"a": "\\u0041 \\"[[[["}')
    wide = [[{"k": "v"}] for _ in range(100_000)] + [{"a\x00": 1}]
    assert list(json_problems(wide, ("body",))) == [
        (("body", 100_000, "a\\x00"), "key contains a NUL character (at index 1)")
    ]
    deep: list[Any] = []
    for _ in range(MAX_JSON_DEPTH + 5):
        deep = [deep]
    [(loc, problem)] = json_problems(deep)
    assert len(loc) == MAX_JSON_DEPTH and "levels deep" in problem


def test_schemas_apply_the_rule_in_code_too() -> None:
    with pytest.raises(ValidationError, match="metadata_filter"):
        SearchRequest(query="x", metadata_filter={"a": {"b\x00": 1}})
    with pytest.raises(ValidationError, match="NUL"):
        SearchRequest(query="x", pipeline_id="\x00")
    with pytest.raises(ValidationError, match="levels deep"):
        SearchRequest(query="x", metadata_filter={"a": json.loads("[" * 40 + "]" * 40)})
    with pytest.raises(ValidationError, match="surrogate"):
        ChatCompletionRequest.model_validate(
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]}
        )
