"""The knowledge base as an MCP server: streamable HTTP at ``/mcp`` on the agent's own app.

Built with the official ``mcp`` SDK's ``MCPServer``, stateless (every POST is answered on its
own, so any replica can take any request) and answering plain JSON. :class:`MCPEndpoint` is
the route's ASGI app; before a message reaches the SDK it goes through the API's own gates:

* the body limit, the text rule and the access log/metrics (the app's middleware, as for
  every route);
* authentication: ``deps.get_principal``, the dependency every API route uses (bearer JWT
  or JWKS; failures per client IP limited by AUTH_FAILURES_PER_MINUTE);
* the per-user rate limit (``RateLimiter.admit``, the window ``/api/search`` counts in) for
  each message that reads the knowledge store (:data:`LIMITED_METHODS`); the handshake and
  ``tools/list`` do not count;
* refusals (401, 403, 429) raise the service's own errors, which the app's handler answers and
  writes to the ``ragkeeper.audit`` log.

The tools call the functions the Pydantic AI agent's tools call (``agent.search_passages``,
``document_summaries``, ``read_page``, ``tabular_rows``) with ``Services.deps()``: one code
path. Documents are resources too (:data:`DOCUMENT_URI`), listed page by page and read in
pages of characters. Every tool call is counted in ``ragkeeper_agent_mcp_tool_calls_total``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.mcpserver.resources.templates import ResourceSecurity
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ListResourcesResult, PaginatedRequestParams, Resource
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from ._version import __version__
from .agent import (
    MAX_LIST_LIMIT,
    MAX_SEARCH_K,
    DocumentPage,
    DocumentSummary,
    Passage,
    ToolInputError,
    document_summaries,
    read_page,
    search_passages,
    tabular_rows,
)
from .audit import RequestContext, request_context_var
from .deps import get_principal
from .logs import request_id_var
from .metrics import MCP_TOOL_CALLS
from .services import Services
from .settings import Settings
from .text import JsonObject, Text

logger = logging.getLogger(__name__)

PATH = "/mcp"
DOCUMENT_URI = "ragkeeper://documents/{document_id}{?offset,limit}"
LIMITED_METHODS = frozenset({"tools/call", "resources/read", "resources/list"})
"""The messages that read the knowledge store, each counted against the caller's window."""
RESOURCE_PAGE = 100
_CALLER = "ragkeeper.mcp_caller"

INSTRUCTIONS = """\
The organisation's documents (ragkeeper). Call `search_documents` first; every passage carries
its citation (title, url, document_id, chunk). Read more of a document with `get_document`
(paged by characters) or its resource URI; `list_documents` shows what exists; `query_rows`
(when offered) runs read-only SQL over the rows of spreadsheets and CSV files. Cite the title
and URL of what you use, and say so when the documents do not answer a question.
"""


def document_uri(document_id: str) -> str:
    """A document's resource URI (the id percent-encoded: ids contain ``/`` and ``:``)."""
    return f"ragkeeper://documents/{quote(document_id, safe='')}"


@dataclass(frozen=True, slots=True)
class Caller:
    """What :class:`MCPEndpoint` learned about the request, for the tools it reaches."""

    services: Services
    user_id: str
    request_id: str
    context: RequestContext | None


class CitedPassage(Passage):
    """A passage with its citation: title, url, document_id, chunk, and its document's URI."""

    resource: str


class SearchResults(BaseModel):
    passages: list[CitedPassage]


class DocumentList(BaseModel):
    documents: list[DocumentSummary]
    next_offset: int | None = Field(description="pass as `offset` for the next page")


class DocumentPageOut(BaseModel):
    document_id: str
    title: str
    url: str | None
    mime_type: str | None
    offset: int
    content: str
    next_offset: int | None = Field(description="pass as `offset` to read on; null at the end")
    resource: str


def page_out(page: DocumentPage) -> DocumentPageOut:
    info = page.info
    return DocumentPageOut(
        document_id=info.id,
        title=info.title,
        url=info.url,
        mime_type=info.mime_type,
        offset=page.offset,
        content=page.content,
        next_offset=page.next_offset,
        resource=document_uri(info.id),
    )


def caller_of(request: object) -> Caller | None:
    """What :class:`MCPEndpoint` put in the HTTP request's scope (None off that path)."""
    caller = request.scope.get(_CALLER) if isinstance(request, Request) else None
    return caller if isinstance(caller, Caller) else None


def _caller(ctx: Context) -> Caller:
    caller = caller_of(ctx.request_context.request)
    if caller is None:
        raise ToolError("not called through /mcp")
    return caller


@contextmanager
def tool_call(ctx: Context, tool: str) -> Iterator[Caller]:
    """The caller of one tool call, with the request's id and audit context set (the SDK
    runs the call in its own task), counted by outcome; a :class:`ToolInputError` becomes the
    SDK's ``ToolError`` (an error result the model reads)."""
    caller = _caller(ctx)
    id_token = request_id_var.set(caller.request_id)
    context_token = request_context_var.set(caller.context)
    try:
        yield caller
    except ToolInputError as exc:
        MCP_TOOL_CALLS.labels(tool, "invalid").inc()
        raise ToolError(str(exc)) from exc
    except Exception:
        MCP_TOOL_CALLS.labels(tool, "error").inc()
        raise
    else:
        MCP_TOOL_CALLS.labels(tool, "ok").inc()
    finally:
        request_context_var.reset(context_token)
        request_id_var.reset(id_token)


Query = Annotated[Text, Field(min_length=1, max_length=8000, description="what to look for")]
PipelineId = Annotated[
    Text | None,
    Field(
        default=None,
        min_length=1,
        max_length=255,
        description='only documents of this source, e.g. "default/handbook"',
    ),
]
DocumentId = Annotated[
    Text, Field(min_length=1, max_length=1000, description="a `document_id` from a result")
]
Offset = Annotated[int, Field(ge=0, description="the first character to return")]


async def search_documents(
    ctx: Context,
    query: Query,
    k: Annotated[int, Field(ge=1, le=MAX_SEARCH_K, description="passages to return")] = 5,
    pipeline_id: PipelineId = None,
    metadata_filter: Annotated[
        JsonObject | None,
        Field(
            description="only passages whose metadata contains these pairs, e.g. "
            '{"mime_type": "application/pdf"}'
        ),
    ] = None,
) -> SearchResults:
    """Search the organisation's documents for passages relevant to a question (semantic and
    keyword search combined, best first).

    Write the query in natural language with the names and key terms you expect in the text.
    Each passage comes with its citation: document title, URL, `document_id` and `chunk` (its
    position in the document), plus `resource`, the document's URI. Cite title and URL when
    you use a passage; read around it with `get_document`.
    """
    with tool_call(ctx, "search_documents") as caller:
        if len(query) > caller.services.settings.max_query_chars:
            raise ToolInputError("query is longer than MAX_QUERY_CHARS")
        found = await search_passages(
            caller.services.deps(), query, k, pipeline_id, metadata_filter
        )
        return SearchResults(
            passages=[
                CitedPassage(**p.model_dump(), resource=document_uri(p.document_id)) for p in found
            ]
        )


async def list_documents(
    ctx: Context,
    pipeline_id: PipelineId = None,
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_LIMIT, description="documents per page")] = 50,
    offset: Annotated[int, Field(ge=0, description="documents to skip (paging)")] = 0,
) -> DocumentList:
    """List the documents in the knowledge base, newest first: id, title, URL, type, number
    of chunks and, for spreadsheets and CSV files, their columns (useful for `query_rows`).
    """
    with tool_call(ctx, "list_documents") as caller:
        docs = await document_summaries(caller.services.deps(), pipeline_id, limit, offset)
        more = offset + len(docs) if len(docs) == limit else None
        return DocumentList(documents=docs, next_offset=more)


async def get_document(
    ctx: Context,
    document_id: DocumentId,
    offset: Offset = 0,
    limit: Annotated[
        int | None,
        Field(ge=1, description="characters to return (default and maximum: the server's)"),
    ] = None,
) -> DocumentPageOut:
    """Read a document's text, one page of characters at a time: start at `offset` 0 and
    pass the returned `next_offset` to read on (null means the end). Use it when a passage
    from `search_documents` is not enough context.
    """
    with tool_call(ctx, "get_document") as caller:
        return page_out(await read_page(caller.services.deps(), document_id, offset, limit))


async def query_rows(
    ctx: Context,
    sql: Annotated[Text, Field(min_length=1, max_length=20_000, description="one SELECT")],
) -> str:
    """Run one read-only PostgreSQL SELECT over the rows of spreadsheets and CSV files, for
    counts, sums and lookups. Tables:

    - tabular_datasets(dataset_id, pipeline_id, title, url, mime_type, schema jsonb,
      updated_at): one row per file; schema maps sheet name ('' for CSV) to its columns.
    - document_rows(dataset_id, sheet, row_number, row_data jsonb): one row per data row;
      read a column as row_data->>'Column name' and cast it, e.g.
      (row_data->>'Revenue')::numeric.

    Writes, DDL and other tables are refused; results are capped. Rows come back as JSON
    lines.
    """
    with tool_call(ctx, "query_rows") as caller:
        return await tabular_rows(caller.services.deps(), sql)


async def read_document_resource(
    ctx: Context, document_id: str, offset: int = 0, limit: int | None = None
) -> str:
    """A page of a document's text as JSON (the same as `get_document`)."""
    caller = _caller(ctx)
    try:
        page = await read_page(caller.services.deps(), document_id, max(0, offset), limit)
    except ToolInputError as exc:
        raise ResourceNotFoundError(str(exc)) from exc
    return page_out(page).model_dump_json()


class KnowledgeMCP(MCPServer[Any]):
    """``resources/list`` lists the documents themselves, a page of :data:`RESOURCE_PAGE`
    at a time (the cursor is the offset); the SDK's own list holds only fixed resources."""

    async def _handle_list_resources(
        self, ctx: Any, params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        caller = caller_of(ctx.request)
        if caller is None:
            return ListResourcesResult(resources=[])
        cursor = params.cursor if params is not None else None
        offset = int(cursor) if cursor and cursor.isdigit() else 0
        docs = await document_summaries(caller.services.deps(), None, RESOURCE_PAGE, offset)
        more = str(offset + len(docs)) if len(docs) == RESOURCE_PAGE else None
        return ListResourcesResult(resources=[_resource(d) for d in docs], next_cursor=more)


def _resource(doc: DocumentSummary) -> Resource:
    return Resource(
        uri=document_uri(doc.document_id),
        name=doc.document_id,
        title=doc.title,
        description=f"{doc.title} ({doc.url or 'no URL'}), {doc.chunks} chunk(s); read "
        "in pages with ?offset=N&limit=N",
        mime_type="application/json",
    )


def build_mcp_server(*, sql: bool = True) -> KnowledgeMCP:
    """The tools and the document resource template; ``query_rows`` only with ``sql``
    (SQL_TOOL_ENABLED), as the agent offers its SQL tool."""
    server = KnowledgeMCP(
        name="ragkeeper", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )
    for tool in (search_documents, list_documents, get_document):
        server.add_tool(tool, structured_output=True)
    if sql:
        server.add_tool(query_rows, structured_output=False)
    server.resource(
        DOCUMENT_URI,
        name="document",
        title="A document of the knowledge base",
        description="A document's text as JSON (title, url, content, next_offset), read in "
        "pages: offset (a character) and limit (characters).",
        mime_type="application/json",
        security=ResourceSecurity(exempt_params={"document_id"}),
    )(read_document_resource)
    return server


def _limited(body: bytes) -> bool:
    """Whether a POST body holds a message that reads the knowledge store."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return False  # the SDK answers it (parse error)
    messages = parsed if isinstance(parsed, list) else [parsed]
    return any(isinstance(m, dict) and m.get("method") in LIMITED_METHODS for m in messages)


class MCPEndpoint:
    """The ``/mcp`` route's ASGI app: authenticate, rate-limit, then hand the request (its
    body replayed) to the SDK's session manager."""

    def __init__(self, settings: Settings) -> None:
        self.server = build_mcp_server(sql=settings.sql_tool_enabled)
        # With a token required, the token protects the endpoint: no Host/Origin checks (the
        # public host is the Ingress's). Without one (AUTH_MODE=disabled, the local stack) the
        # SDK checks Host and Origin against localhost when HOST is a loopback address, so a
        # web page cannot reach the endpoint through DNS rebinding.
        token_required = settings.auth_mode != "disabled"
        self.server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            json_response=True,
            max_request_body_size=settings.max_request_bytes,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
            if token_required
            else None,
            host=settings.host,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The session manager's task group, for the app's lifespan."""
        async with self.server.session_manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        services: Services = request.app.state.services
        principal = await get_principal(request, services, request.headers.get("authorization"))
        body = await request.body() if request.method == "POST" else b""
        if body and _limited(body):
            await services.limiter.admit(principal.user_id, PATH, request_id_var.get())
        scope[_CALLER] = Caller(
            services, principal.user_id, request_id_var.get(), request_context_var.get()
        )
        await self.server.session_manager.handle_request(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class MCPRoute(Route):
    """``/mcp`` for every method, named by its template in the metrics and the audit log
    (``scope["route"]``, as FastAPI's own routes are), and left out of the OpenAPI document."""

    def __init__(self, endpoint: MCPEndpoint) -> None:
        super().__init__(PATH, endpoint=endpoint, include_in_schema=False)
        self.mcp = endpoint

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child
