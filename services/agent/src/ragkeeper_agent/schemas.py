"""Request and response bodies of the HTTP API (validation errors become clear 422s).

Every string a request carries is :data:`~ragkeeper_agent.text.Text` (the accepted text,
``text.py``) with a length limit here or in its route; free-form JSON is
:data:`~ragkeeper_agent.text.JsonObject`.

The NDJSON chat body keeps its field names (``query, user_id, request_id,
session_id, files``) compatible with existing clients of the earlier
docker-compose deployment's API; the OpenAI-compatible bodies follow the Chat
Completions API closely enough for its clients and chat UIs, and ignore
parameters they do not use.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .text import JsonObject, Text

MAX_FILES = 5
SESSION_ID_PATTERN = r"^[A-Za-z0-9_~.:-]{1,128}$"
MAX_ID_CHARS = 255
MAX_SEARCH_QUERY_CHARS = 8000


class FileAttachment(BaseModel):
    """A file sent along with a question (base64), in the NDJSON route's ``files`` list."""

    model_config = ConfigDict(populate_by_name=True)

    file_name: Text = Field(alias="fileName", min_length=1, max_length=255)
    content: Text = Field(description="base64-encoded bytes")
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


class AgentRequest(BaseModel):
    query: Text = Field(min_length=1, description="at most MAX_QUERY_CHARS characters")
    user_id: Text | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    request_id: Text | None = Field(default=None, max_length=128)
    session_id: Text | None = Field(default=None, pattern=SESSION_ID_PATTERN)
    files: list[FileAttachment] | None = Field(default=None, max_length=MAX_FILES)

    @field_validator("session_id", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value


class SearchRequest(BaseModel):
    query: Text = Field(min_length=1, max_length=MAX_SEARCH_QUERY_CHARS)
    k: int = Field(default=5, ge=1, le=50)
    pipeline_id: Text | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    metadata_filter: JsonObject | None = None


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


class MessageOut(BaseModel):
    id: int
    role: str
    content: str
    created_at: datetime
    message: dict[str, Any]


# ------------------------------------------------------------------ OpenAI-compatible


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Text = Field(max_length=64)
    text: Text | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: Text | None = Field(default=None, max_length=MAX_ID_CHARS)
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = Field(default=None, max_length=MAX_ID_CHARS)

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if value[-1].role != "user" or not value[-1].text().strip():
            raise ValueError("the last message must be a non-empty user message")
        return value
