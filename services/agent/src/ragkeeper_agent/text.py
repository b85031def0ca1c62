"""What text the API accepts: the one rule, applied to every field of every request.

A request's text may hold any Unicode character except

- NUL (U+0000): Postgres stores none in ``text`` or ``jsonb``;
- the other C0 control characters (U+0001-U+001F) but tab, line feed and carriage return;
- lone surrogates (U+D800-U+DFFF not in a pair; JSON can spell them, ``"\\ud800"``): they are
  not characters and cannot be encoded as UTF-8.

JSON bodies may nest at most :data:`MAX_JSON_DEPTH` arrays and objects deep (one too deep
for the parser itself, about a thousand levels, is refused as such). Everything else a
field may hold (lengths, patterns) is in its schema (``schemas.py``) or its route.

Two places apply the rule, both from here: ``middleware.RequestTextMiddleware`` checks every
JSON body (each key and string at any depth, known field or not) and every query
parameter before a route sees them; the request schemas' :data:`Text` and :data:`JsonObject`
types check their own fields, so a model built in code obeys it too. A refusal is a 422 in
FastAPI's validation error shape, with the field's location.

The OpenAPI document states the rule where JSON Schema can: :data:`TEXT_PATTERN` on every
string, ``propertyNames`` on every object (free-form values are :data:`JsonValue`). A JSON
Schema string is Unicode text, which has no lone surrogates, and the depth limit is only named
in the descriptions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from pydantic import AfterValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from typing_extensions import TypeAliasType

MAX_JSON_DEPTH = 32
MAX_KEY_CHARS = 255
MAX_JSON_STRING_CHARS = 2000

_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F]*$"
"""The rule as a JSON Schema (ECMA-262) pattern, for the OpenAPI document: no C0 control
character but tab, line feed and carriage return."""

Loc = tuple[str | int, ...]


def text_problem(value: str) -> str | None:
    """Why ``value`` is not acceptable text, or None when it is."""
    found = _REFUSED.search(value)
    if found is None:
        return None
    char = found.group()
    position = found.start()
    if char == "\x00":
        return f"contains a NUL character (at index {position})"
    if "\ud800" <= char <= "\udfff":
        return (
            f"contains a lone surrogate U+{ord(char):04X} (at index {position}), not valid Unicode"
        )
    return f"contains the control character U+{ord(char):04X} (at index {position})"


def check_text(value: str) -> str:
    """Pydantic validator: ``value`` unchanged, or a ValueError saying why it is refused."""
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def json_problems(value: Any, loc: Loc = (), depth: int = 0) -> Iterator[tuple[Loc, str]]:
    """Each refused key or string in a parsed JSON value, with its location and the reason;
    a container nested deeper than :data:`MAX_JSON_DEPTH` is reported once, not entered.

    Iterative (an explicit stack); an item's location is built only when it is reported or
    has children, so a body of many small values stays cheap.
    """
    stack: list[tuple[Any, Loc, str | int | None, int]] = [(value, loc, None, depth)]
    while stack:
        item, parent, key, level = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                yield _at(parent, key), problem
        elif isinstance(item, (dict, list)) and item:
            where = _at(parent, key)
            if level >= MAX_JSON_DEPTH:
                yield where, f"nests arrays and objects more than {MAX_JSON_DEPTH} levels deep"
            elif isinstance(item, list):
                stack.extend((item[i], where, i, level + 1) for i in range(len(item) - 1, -1, -1))
            else:
                children: list[tuple[Any, Loc, str | int | None, int]] = []
                for name, child in item.items():
                    problem = text_problem(name)
                    if problem is not None:
                        yield (*where, _printable(name)), f"key {problem}"
                    else:
                        children.append((child, where, name, level + 1))
                stack.extend(reversed(children))


def _at(parent: Loc, key: str | int | None) -> Loc:
    return parent if key is None else (*parent, key)


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# In a JSON text: an escaped C0 control or surrogate, or a surrogate encoded in UTF-8 bytes.
_TEXT_HINT = re.compile(rb"\\u00[01][0-9a-f]|\\ud[89a-f]|\xed[\xa0-\xbf]", re.IGNORECASE)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKETS = bytes.maketrans(b"{}", b"[]")


def json_may_be_refused(body: bytes) -> bool:
    """Whether a parsed JSON body needs :func:`json_problems`: it may hold refused text, or
    nests deeper than :data:`MAX_JSON_DEPTH`. False is certain; both checks run on the bytes
    at C speed (each round of ``replace`` removes exactly one level of innermost brackets)."""
    if _TEXT_HINT.search(body):
        return True
    skeleton = _STRING.sub(b"", body).translate(_BRACKETS, _NOT_BRACKET)
    for _ in range(MAX_JSON_DEPTH):
        if not skeleton:
            return False
        skeleton = skeleton.replace(b"[]", b"")
    return bool(skeleton)


def _printable(key: str) -> str:
    """A refused key as it can appear in an error body (escaped, so it is valid UTF-8)."""
    return key.encode("unicode_escape", "backslashreplace").decode("ascii")


def _strings(value: Any, loc: Loc = ()) -> Iterator[tuple[Loc, str, int]]:
    """Each key and string in ``value``: its location, the text and its length limit."""
    if isinstance(value, str):
        yield loc, value, MAX_JSON_STRING_CHARS
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*loc, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield (*loc, key), key, MAX_KEY_CHARS
            yield from _strings(item, (*loc, key))


def check_json_object(value: dict[str, Any]) -> dict[str, Any]:
    """Pydantic validator for free-form JSON fields (``metadata_filter``): the text rule for
    every key and string, the depth limit, and length limits for keys and strings."""
    for loc, problem in json_problems(value, depth=1):
        raise ValueError(f"{_where(loc)}{problem}")
    for loc, text, limit in _strings(value):
        if len(text) > limit:
            raise ValueError(f"{_where(loc)}longer than {limit} characters")
    return value


def _where(loc: Loc) -> str:
    return "".join(f"[{part!r}]" for part in loc) + ": " if loc else ""


@dataclass(frozen=True, slots=True)
class TextSchema:
    """JSON Schema only: a string follows :data:`TEXT_PATTERN`, or ``pattern`` (a field's own,
    which admits less: pydantic leaves it out of the schema of a string with a validator), with
    an optional length limit."""

    max_length: int | None = None
    pattern: str = TEXT_PATTERN

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = self.pattern
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema


@dataclass(frozen=True, slots=True)
class KeysSchema:
    """JSON Schema only: an object's keys follow :data:`TEXT_PATTERN`, with an optional length
    limit (``propertyNames``; pydantic would write a key pattern as ``patternProperties``, which
    does not refuse the other keys)."""

    max_length: int | None = None

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        names: dict[str, Any] = {"pattern": TEXT_PATTERN}
        if self.max_length is not None:
            names["maxLength"] = self.max_length
        schema["propertyNames"] = names
        return schema


# Every string field of a request schema is ``Text`` (with its own length limits added
# through ``Field``); free-form JSON objects are ``JsonObject``.
Text = Annotated[str, AfterValidator(check_text), TextSchema()]

# Any JSON value whose keys and strings follow the rule: the fields a body may carry beyond
# its schema's (the middleware checks them). Validation accepts any JSON value; the
# annotations only document the rule. mypy reads a recursive alias in the first form only,
# pydantic names it in the document ($ref) in the second only.
if TYPE_CHECKING:
    JsonValue: TypeAlias = (
        str | bool | int | float | None | list["JsonValue"] | dict[str, "JsonValue"]
    )
    FilterValue: TypeAlias = JsonValue
else:
    JsonValue = TypeAliasType(
        "JsonValue",
        Annotated[str, TextSchema()]
        | bool
        | int
        | float
        | None
        | list["JsonValue"]
        | Annotated[dict[str, "JsonValue"], KeysSchema()],
    )
    # The same, with ``metadata_filter``'s limits (MAX_KEY_CHARS, MAX_JSON_STRING_CHARS).
    FilterValue = TypeAliasType(
        "FilterValue",
        Annotated[str, TextSchema(MAX_JSON_STRING_CHARS)]
        | bool
        | int
        | float
        | None
        | list["FilterValue"]
        | Annotated[dict[str, "FilterValue"], KeysSchema(MAX_KEY_CHARS)],
    )

JsonObject = Annotated[
    dict[str, FilterValue], KeysSchema(MAX_KEY_CHARS), AfterValidator(check_json_object)
]
