"""The OpenAPI document says what the API does (``ragkeeper_agent.openapi``).

Pinned here: every operation's statuses (each error with the one error body and its headers),
the streamed answers' media types, the bearer scheme, the rules written as JSON Schema
(the text rule's pattern agrees with ``text.py``, base64 with the decoder) and the limits that
are settings. ``test_fuzz.py`` then checks the running API against the document.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import pytest

from ragkeeper_agent import create_app
from ragkeeper_agent.openapi import NDJSON, SSE
from ragkeeper_agent.schemas import BASE64_PATTERN, MAX_SEARCH_QUERY_CHARS
from ragkeeper_agent.text import TEXT_PATTERN, text_problem

from .conftest import settings_for

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
EVERY_ROUTE = {"401", "413", "422", "429", "503"}
# operation -> (its error statuses beyond EVERY_ROUTE, the 200's media types)
OPERATIONS: dict[tuple[str, str], tuple[set[str], set[str]]] = {
    ("post", "/api/pydantic-agent"): ({"403", "404", "502"}, {NDJSON}),
    ("post", "/v1/chat/completions"): ({"502"}, {"application/json", SSE}),
    ("get", "/v1/models"): (set(), {"application/json"}),
    ("get", "/api/conversations"): ({"403"}, {"application/json"}),
    ("get", "/api/conversations/{session_id}/messages"): ({"403", "404"}, {"application/json"}),
    ("post", "/api/search"): (set(), {"application/json"}),
    ("get", "/api/memories"): ({"403", "404"}, {"application/json"}),
    ("delete", "/api/memories/{memory_id}"): ({"403", "404"}, {"application/json"}),
}


def _document(**settings: Any) -> dict[str, Any]:
    return create_app(settings_for("postgresql://unused/db", **settings)).openapi()


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return _document()


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_every_operation_is_pinned_here(document: dict[str, Any]) -> None:
    assert set(_operations(document)) == set(OPERATIONS)


@pytest.mark.parametrize("key", OPERATIONS, ids=lambda key: f"{key[0].upper()} {key[1]}")
def test_statuses_and_the_error_body(document: dict[str, Any], key: tuple[str, str]) -> None:
    operation = _operations(document)[key]
    extra, _ = OPERATIONS[key]
    responses = operation["responses"]
    assert set(responses) == {"200"} | EVERY_ROUTE | extra
    for status, response in responses.items():
        assert response["description"], status
        assert response["headers"]["X-Request-ID"]["required"] is True
        if status == "200":
            continue
        assert response["content"] == {"application/json": {"schema": ERROR_BODY}}, status
        retry = status in ("429", "503")
        assert ("Retry-After" in response["headers"]) == retry, status
        if retry:
            assert response["headers"]["Retry-After"]["required"] is True
    assert responses["401"]["headers"]["WWW-Authenticate"]["schema"]["const"] == "Bearer"
    assert operation["security"] == [{"bearer": []}]


def test_the_error_body(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    detail = schemas["ErrorBody"]["properties"]["detail"]["anyOf"]
    assert {"type": "string"} in detail
    assert {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}} in detail
    assert set(schemas["FieldError"]["required"]) == {"type", "loc", "msg"}
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 body is replaced everywhere
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


@pytest.mark.parametrize("key", OPERATIONS, ids=lambda key: f"{key[0].upper()} {key[1]}")
def test_media_types(document: dict[str, Any], key: tuple[str, str]) -> None:
    _, media_types = OPERATIONS[key]
    assert set(_operations(document)[key]["responses"]["200"]["content"]) == media_types


def test_streams_describe_their_items(document: dict[str, Any]) -> None:
    operations = _operations(document)
    lines = operations["post", "/api/pydantic-agent"]["responses"]["200"]["content"][NDJSON]
    names = {"#/components/schemas/AgentDelta", "#/components/schemas/AgentDone"}
    assert names <= {branch["$ref"] for branch in lines["itemSchema"]["anyOf"]}
    assert lines["schema"] == {"type": "array", "items": lines["itemSchema"]}
    completions = operations["post", "/v1/chat/completions"]["responses"]["200"]["content"]
    data = completions[SSE]["itemSchema"]["properties"]["data"]["anyOf"]
    assert {"type": "string", "const": "[DONE]", "description": "the last event"} in data
    chunk = next(branch for branch in data if "contentSchema" in branch)
    assert chunk["contentMediaType"] == "application/json"
    assert completions["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletion"
    }


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if isinstance(value.get("$ref"), str) else set()
        return found.union(*(_refs(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(_refs(item) for item in value))
    return set()


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    prefix = "#/components/schemas/"
    refs = _refs(document)
    assert all(ref.startswith(prefix) for ref in refs), refs
    assert {ref.removeprefix(prefix) for ref in refs} <= set(document["components"]["schemas"])


def test_links_name_operations_that_exist(document: dict[str, Any]) -> None:
    ids = {operation["operationId"] for operation in _operations(document).values()}
    links = _operations(document)["get", "/api/conversations"]["responses"]["200"]["links"]
    assert {link["operationId"] for link in links.values()} <= ids


def _strings(value: Any) -> list[dict[str, Any]]:
    """Every string schema in these request schemas and parameters."""
    if isinstance(value, dict):
        own = [value] if value.get("type") == "string" else []
        return own + [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_every_request_string_has_a_pattern(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    requests = [
        schemas[name]
        for name in schemas
        if name.endswith("Request")
        or name in ("ChatMessage", "ContentPart", "FileAttachment", "JsonValue", "FilterValue")
    ]
    parameters = [operation.get("parameters", []) for operation in _operations(document).values()]
    strings = _strings(requests) + _strings(parameters)
    assert strings
    assert [s for s in strings if "pattern" not in s and "enum" not in s] == []
    bodies = [schema for schema in requests if "properties" in schema]
    assert {schema["title"] for schema in bodies} >= {"AgentRequest", "ChatMessage"}
    for schema in bodies:  # the keys of a body and of the fields it does not know
        assert schema["propertyNames"] == {"pattern": TEXT_PATTERN}, schema["title"]
        assert schema["additionalProperties"] == {"$ref": "#/components/schemas/JsonValue"}


def test_the_text_pattern_is_the_text_rule() -> None:
    pattern = re.compile(TEXT_PATTERN)  # ECMA-262's \uXXXX reads the same in Python
    for code in [*range(0x80), 0x85, 0xA0, 0x2028, 0xFEFF, 0xFFFD, 0x1F600]:
        text = f"a{chr(code)}b"
        assert (pattern.search(text) is not None) == (text_problem(text) is None), hex(code)


@pytest.mark.parametrize(
    "value",
    ["", "YQ==", "YWI=", "YWJj", "YQ=", "YQ", "YQ===", "YQ==YQ==", "YW\nJj", "-_8=", "YR=="],
)
def test_the_base64_pattern_is_the_decoder(value: str) -> None:
    try:
        base64.b64decode(value, validate=True)
        decodes = True
    except (binascii.Error, ValueError):
        decodes = False
    assert (re.fullmatch(BASE64_PATTERN.strip("^$"), value) is not None) == decodes


@pytest.mark.parametrize("limit", [100, 20_000])
def test_settings_are_stated(limit: int) -> None:
    schemas = _document(max_query_chars=limit)["components"]["schemas"]
    assert schemas["AgentRequest"]["properties"]["query"]["maxLength"] == limit
    search = schemas["SearchRequest"]["properties"]["query"]["maxLength"]
    assert search == min(limit, MAX_SEARCH_QUERY_CHARS)
