"""Request and response bodies of the HTTP API (validation errors become clear 422s).

Every string a request carries is :data:`~ragkeeper_agent.text.Text` (the accepted text,
``text.py``) with a length limit here or in its route; free-form JSON is
:data:`~ragkeeper_agent.text.JsonObject`, and the fields a body carries beyond its schema's are
:data:`~ragkeeper_agent.text.JsonValue` (:class:`RequestBody`), so the OpenAPI document states
the text rule for them too.

The NDJSON chat body keeps its field names (``query, user_id, request_id,
session_id, files``) compatible with existing clients of the earlier
docker-compose deployment's API; the OpenAI-compatible bodies follow the Chat
Completions API closely enough for its clients and chat UIs, and ignore
parameters they do not use.

The streamed answers' items (:class:`AgentDelta` ... :class:`StreamError`) and the OpenAI
answers are ``TypedDict`` s: the routes build them as plain dicts, and ``openapi.py`` documents
them.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import TypedDict

from .text import MAX_JSON_DEPTH, TEXT_PATTERN, JsonObject, JsonValue, Text, TextSchema

MAX_FILES = 5
SESSION_ID_PATTERN = r"^[A-Za-z0-9_~.:-]{1,128}$"
# A chat request's session_id may also be empty, which means none (a new conversation).
SESSION_ID_OR_EMPTY = r"^[A-Za-z0-9_~.:-]{0,128}$"
# What ``base64.b64decode(..., validate=True)`` accepts: the alphabet in groups of four, padded.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
MAX_ID_CHARS = 255
MAX_SEARCH_QUERY_CHARS = 8000
MAX_MESSAGES = 200

SessionId = Annotated[
    Text, Field(pattern=SESSION_ID_PATTERN), TextSchema(pattern=SESSION_ID_PATTERN)
]
"""A conversation's id: the text rule first (a refused character is named, not echoed),
then its pattern."""

BODY_RULES = (
    f"JSON nests at most {MAX_JSON_DEPTH} arrays and objects deep, and the body is at most "
    "MAX_REQUEST_BYTES bytes (413)."
)


class RequestBody(BaseModel):
    """A JSON request body: fields it does not know are kept (and ignored), and, like its own
    fields, follow the text rule, which the middleware applies to every key and string."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"propertyNames": {"pattern": TEXT_PATTERN}}
    )
    __pydantic_extra__: dict[str, JsonValue] = Field(init=False)


class FileAttachment(RequestBody):
    """A file sent along with a question (base64), in the NDJSON route's ``files`` list: a
    document the ingestion job reads (PDF, DOCX, TXT, Markdown, HTML, CSV, TSV, XLSX) or a
    PNG, JPEG or WebP image, known by ``fileName``'s extension or else ``mimeType``. At most
    MAX_ATTACHMENT_BYTES decoded bytes per file and MAX_MESSAGE_ATTACHMENT_BYTES per message
    (413); an unsupported or unreadable file is a 422 naming it."""

    model_config = ConfigDict(populate_by_name=True)

    file_name: Text = Field(alias="fileName", min_length=1, max_length=255)
    content: Text = Field(
        description="base64-encoded bytes",
        json_schema_extra={"pattern": BASE64_PATTERN, "contentEncoding": "base64"},
    )
    mime_type: Text = Field(alias="mimeType", default="application/octet-stream", max_length=127)

    @field_validator("content")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("content must be base64") from exc
        return value

    def data(self) -> bytes:
        return base64.b64decode(self.content)


class AgentRequest(RequestBody):
    __doc__ = (
        "A question, in a new conversation or in the caller's own ``session_id`` (404 for "
        "anyone else's). ``query`` is at most MAX_QUERY_CHARS characters (the document a "
        "running agent serves states the value); the whole prompt (the conversation so far, "
        "text attachments and the question) at most MAX_PROMPT_CHARS characters (413). "
        + BODY_RULES
    )

    query: Text = Field(min_length=1, description="at most MAX_QUERY_CHARS characters")
    user_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="must be the token's subject (403 otherwise)",
    )
    request_id: Text | None = Field(default=None, max_length=128)
    session_id: (
        Annotated[Text, Field(pattern=SESSION_ID_PATTERN), TextSchema(pattern=SESSION_ID_OR_EMPTY)]
        | None
    ) = Field(
        default=None, description="a conversation to continue; empty or absent starts a new one"
    )
    files: list[FileAttachment] | None = Field(default=None, max_length=MAX_FILES)

    @field_validator("session_id", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value


class SearchRequest(RequestBody):
    __doc__ = (
        "A search without the model. ``query`` is also at most MAX_QUERY_CHARS characters. "
        + BODY_RULES
    )

    query: Text = Field(min_length=1, max_length=MAX_SEARCH_QUERY_CHARS)
    k: int = Field(default=5, ge=1, le=50)
    pipeline_id: Text | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    metadata_filter: JsonObject | None = Field(
        default=None,
        description="matches chunk metadata by containment; keys at most 255 characters and "
        "strings at most 2000",
    )


class PassageOut(BaseModel):
    document_id: str
    title: str
    url: str | None
    score: float
    content: str


class ConversationOut(BaseModel):
    session_id: str
    title: str | None
    created_at: datetime
    last_message_at: datetime


class MemoryOut(BaseModel):
    id: int
    content: str
    session_id: str | None
    """The conversation the memory was saved in."""
    created_at: datetime
    updated_at: datetime


class MemoryDeleted(BaseModel):
    id: int
    deleted: bool


class AttachmentOut(TypedDict):
    """A file attached to a question (its text is not listed)."""

    id: str
    file_name: str
    mime_type: str
    size_bytes: int


class MessageOut(BaseModel):
    id: int
    role: str
    content: str
    created_at: datetime
    message: dict[str, Any]
    attachments: list[AttachmentOut] = Field(
        default_factory=list, description="the files attached to this (user) message"
    )


# ------------------------------------------------------------------ errors


class FieldError(BaseModel):
    """One refused field, in FastAPI's validation error shape: ``loc`` names it (``["body",
    "query"]``, ``["query", "user_id"]``); ``input`` and ``ctx`` when pydantic gives them (the
    text rule never echoes the refused text)."""

    type: str
    loc: list[str | int]
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """The body of every error status: ``detail`` is a sentence, or, for 422, the list of
    refused fields."""

    detail: str | list[FieldError]


# ------------------------------------------------------------------ the NDJSON stream


class SourceOut(TypedDict):
    """A passage the answer's ``[n]`` refers to."""

    n: int
    document_id: str
    title: str
    url: str | None
    content: str


class AgentDelta(TypedDict):
    """A piece of the answer: ``text`` is the whole answer so far, ``delta`` the new text."""

    text: str
    delta: str


class AgentDone(TypedDict):
    """The last line of an answered turn (``conversation_title`` only for a new
    conversation, ``attachments`` only when the question carried files)."""

    text: str
    session_id: str
    complete: Literal[True]
    sources: list[SourceOut]
    conversation_title: NotRequired[str]
    attachments: NotRequired[list[AttachmentOut]]


class AgentFailed(TypedDict):
    """The last line of a turn that failed after the stream started: ``status`` is the HTTP
    status the failure would have had (503: a dependency is down, retry shortly)."""

    error: str
    complete: Literal[True]
    status: int
    session_id: NotRequired[str]


# ------------------------------------------------------------------ OpenAI-compatible


class ContentPart(RequestBody):
    type: Text = Field(max_length=64)
    text: Text | None = None


class ChatMessage(RequestBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class StreamOptions(RequestBody):
    include_usage: bool = False


class ChatCompletionRequest(RequestBody):
    __doc__ = (
        "OpenAI's Chat Completions request. The last message must be a user message whose "
        "text (``content``, or its ``text`` parts) is not blank and at most MAX_QUERY_CHARS "
        "characters; all messages together at most MAX_PROMPT_CHARS characters (413). " + BODY_RULES
    )

    model: Text | None = Field(default=None, max_length=MAX_ID_CHARS)
    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=MAX_MESSAGES,
        description="the conversation; the last one is the question (a user message)",
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = Field(default=None, max_length=MAX_ID_CHARS)

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if value[-1].role != "user" or not value[-1].text().strip():
            raise ValueError("the last message must be a non-empty user message")
        return value


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: str


class Choice(TypedDict):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop"]
    logprobs: None


class ChatCompletion(TypedDict):
    """The answer to a request with ``stream`` false."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(TypedDict):
    role: NotRequired[Literal["assistant"]]
    content: NotRequired[str]


class ChunkChoice(TypedDict):
    index: int
    delta: Delta
    finish_reason: Literal["stop"] | None
    logprobs: None


class ChatCompletionChunk(TypedDict):
    """One event of a streamed answer; with ``stream_options.include_usage`` the last one
    before ``[DONE]`` has no choices and carries ``usage``."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: NotRequired[Usage]


class StreamErrorDetail(TypedDict):
    message: str
    type: str


class StreamError(TypedDict):
    """The event that ends a stream that failed after it started (then ``[DONE]``)."""

    error: StreamErrorDetail


class ModelCard(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[ModelCard]
