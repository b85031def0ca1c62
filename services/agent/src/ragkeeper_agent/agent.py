"""The Pydantic AI agent: instructions, dependencies and the tools it may call.

Tools read the knowledge store (search, list, read), query tabular rows through
the restricted read-only SQL function, and search the web when SearXNG or Brave
is configured. There is deliberately no code-execution tool. Each knowledge tool is a thin
wrapper over a function taking :class:`Deps` (``search_passages``, ``document_summaries``,
``read_page``, ``tabular_rows``), which the MCP endpoint's tools (``mcp_server.py``) call too.
Mistakes the model can fix (a bad SQL query, an unknown document id) raise
:class:`ToolInputError`, which comes back as ``ModelRetry`` so the model sees the error and
tries again; every call is counted by tool and outcome.

Build one agent per app with :func:`build_agent`; the model is chosen by
``ragkeeper_agent.llm`` (an OpenAI-compatible provider, or the offline extractive model).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic_ai import Agent, ModelRetry, RunContext, Tool
from pydantic_ai.models import Model
from pydantic_ai.tools import ToolDefinition

from ragkeeper_knowledge import DocumentInfo, KnowledgeStore, SearchHit
from ragkeeper_knowledge.embedding.base import Embedder
from ragkeeper_knowledge.errors import RerankError, RerankUnavailable
from ragkeeper_knowledge.rerank import Reranker

from .audit import audit, fingerprint
from .errors import SQLToolError
from .memory import (
    MAX_MEMORY_CHARS,
    RECALL_K,
    RECALL_MIN_SIMILARITY,
    Memory,
    MemoryFull,
    MemoryStore,
)
from .metrics import RERANK_DURATION, RERANK_FAILURES, RETRIEVAL_DURATION, TOOL_CALLS
from .tabular import ReadOnlySQL, render_rows
from .websearch import WebSearch, WebSearchError

if TYPE_CHECKING:
    from .redis_cache import SearchCache

logger = logging.getLogger(__name__)

SEARCH_TOOL = "search_documents"
SAVE_MEMORY_TOOL = "save_memory"
MEMORY_HEADER = (
    "What this user asked you to remember in earlier conversations (their own words, not "
    "documents: use them when they matter, do not cite them):"
)
MEMORY_GUIDANCE = (
    "- Call `save_memory` when the user states a lasting fact or preference about themselves "
    "or their work, or asks you to remember something; not for passing chat or questions. "
    "Use `search_memories` to look up what they told you before."
)

INSTRUCTIONS = """\
You answer questions using the organisation's documents, which you reach through tools.

- Always call `search_documents` before answering a question about the documents; search again
  with other words if the first results do not fit. Use `read_document` when a passage is not
  enough, `list_documents` to see what exists, and `query_tabular_rows` (read-only SQL over
  spreadsheet rows) for counts, sums and lookups in tabular files.
- Cite every fact you take from a passage with its number in square brackets, e.g. [2], and end
  with a "Sources:" list giving each cited number, title and URL.
- If the documents do not contain the answer, say so plainly ("The documents do not say ...")
  instead of guessing. Do not invent titles, URLs, numbers or quotes.
- Answer in the language of the question, concisely.
"""


class Passage(BaseModel):
    """One retrieved passage, numbered for citation."""

    n: int
    document_id: str
    title: str
    url: str | None
    score: float
    content: str
    chunk: int | None = None
    """The passage's position in its document (0 = first chunk), when ingestion recorded it."""


class DocumentSummary(BaseModel):
    document_id: str
    title: str
    url: str | None
    mime_type: str | None
    chunks: int
    columns: dict[str, list[str]] | None = None


@dataclass
class Deps:
    """What one agent run needs; built per request from the app's long-lived clients."""

    store: KnowledgeStore
    embedder: Embedder
    sql: ReadOnlySQL
    web: WebSearch | None = None
    search_k: int = 5
    search_weights: tuple[float, float] = (1.0, 1.0)
    """(vector, text) weights of the hybrid search's fusion."""
    reranker: Reranker | None = None
    """Second-stage reranking service (RERANK_*); None searches in the fused order."""
    rerank_candidates: int = 20
    """Hybrid search hits the reranker scores (at least the number of passages asked for)."""
    read_max_chars: int = 20_000
    search_cache: SearchCache | None = None
    """The hybrid search's hits cached in Redis (REDIS_URL); None searches every time."""
    sql_enabled: bool = True
    """The read-only SQL tool is offered (SQL_TOOL_ENABLED); off, it is neither offered nor run."""
    sources: dict[str, Passage] = field(default_factory=dict)
    """Passages returned so far in this run, by chunk key, for the final citation list."""
    memory: MemoryStore | None = None
    """The users' long-term memories (MEMORY_ENABLED); None: no memory tools, nothing recalled."""
    user_id: str | None = None
    """The user the run acts for: whose memories it reads and writes (None: no memory)."""
    session_id: str | None = None
    """The conversation of the run, recorded with a memory saved in it."""
    recalled: list[Memory] | None = None
    """The memories given to the model for this run's question, looked up once per run."""
    attachments: list[Passage] = field(default_factory=list)
    """The text of the files attached to the run's conversation so far, as numbered passages
    (``attachments.passages``), given to the model in the instructions at every turn."""


class ToolInputError(ValueError):
    """A tool call the caller can fix (an empty query, an unknown document id, SQL that
    Postgres refused): the agent's tools turn it into ``ModelRetry``, the MCP tools into an
    error result; the message is for the model."""


@dataclass(frozen=True, slots=True)
class DocumentPage:
    """Part of a document's text: ``content`` starts at character ``offset``;
    ``next_offset`` is where the next page starts, None at the end."""

    info: DocumentInfo
    offset: int
    content: str
    next_offset: int | None


@contextmanager
def _counted(tool: str) -> Iterator[None]:
    try:
        yield
    except ToolInputError as exc:
        TOOL_CALLS.labels(tool, "retry").inc()
        raise ModelRetry(str(exc)) from exc
    except ModelRetry:
        TOOL_CALLS.labels(tool, "retry").inc()
        raise
    except Exception:
        TOOL_CALLS.labels(tool, "error").inc()
        raise
    TOOL_CALLS.labels(tool, "ok").inc()


@dataclass(frozen=True, slots=True)
class SearchArgs:
    """One call of ``store.search``: everything besides the store's contents that decides its
    hits. The search cache's key is built from every field (``redis_cache.SearchCache.key``),
    so a field added here is part of the key."""

    query: str
    k: int
    pipeline_id: str | None
    metadata_filter: dict[str, Any] | None
    weights: tuple[float, float]


async def hybrid_search(deps: Deps, args: SearchArgs) -> list[SearchHit]:
    """Embed the query with the ingestion embedder and run the store's hybrid search."""
    vector = await deps.embedder.embed_query(args.query)
    return await deps.store.search(
        args.query,
        vector,
        k=args.k,
        pipeline_id=args.pipeline_id,
        metadata_filter=args.metadata_filter,
        weights=args.weights,
    )


async def retrieve(
    deps: Deps,
    query: str,
    *,
    k: int | None = None,
    pipeline_id: str | None = None,
    metadata_filter: dict[str, Any] | None = None,
) -> list[Passage]:
    """Embed the query with the ingestion embedder, run the hybrid search, rerank if configured.

    With Redis (``deps.search_cache``), the hybrid search's hits come from the search cache
    when an entry for this exact search and the store's current generation exists
    (docs/redis.md); reranking still runs per request, on those hits.

    With a reranker, the search returns ``max(rerank_candidates, k)`` hits, the reranking
    service scores each, and the ``k`` best by that score are returned with it as their
    ``score`` (equal scores keep the fused order). When the service fails, the search still
    answers: the fused order's first ``k`` (:func:`rerank_hits`).
    """
    size = k or deps.search_k
    started = time.perf_counter()
    args = SearchArgs(
        query=query,
        k=max(deps.rerank_candidates, size) if deps.reranker else size,
        pipeline_id=pipeline_id,
        metadata_filter=metadata_filter,
        weights=deps.search_weights,
    )
    if deps.search_cache is None:
        hits = await hybrid_search(deps, args)
    else:
        hits = await deps.search_cache.search(args, lambda: hybrid_search(deps, args))
    RETRIEVAL_DURATION.observe(time.perf_counter() - started)
    if deps.reranker is not None:
        hits = await rerank_hits(deps.reranker, query, hits, size)
    passages: list[Passage] = []
    for hit in hits:
        key = f"{hit.document_id}#{hit.chunk_id}"
        known = deps.sources.get(key)
        n = known.n if known else len(deps.sources) + 1
        position = hit.metadata.get("position")
        passage = Passage(
            n=n,
            document_id=hit.document_id,
            title=hit.title,
            url=hit.url,
            score=round(hit.score, 6),
            content=hit.content,
            chunk=position if isinstance(position, int) else None,
        )
        deps.sources.setdefault(key, passage)
        passages.append(passage)
    return passages


def rerank_input(hit: SearchHit) -> str:
    """What the reranker reads of a hit: its text under its document title and heading path,
    so a passage that only makes sense under its heading is still judged on it."""
    heading = hit.metadata.get("heading")
    parts = (hit.title, heading if isinstance(heading, str) else None)
    context = " > ".join(part for part in parts if part)
    return f"{context}\n\n{hit.content}" if context else hit.content


async def rerank_hits(
    reranker: Reranker, query: str, hits: Sequence[SearchHit], k: int
) -> list[SearchHit]:
    """The ``k`` best of ``hits`` by the reranker's score, which becomes their ``score``.

    The sort is stable, so hits the service scores equally keep their fused order. A
    ``RerankError`` (the service still failing after its retries, a timeout, a refusal, a
    malformed answer) is counted in ``ragkeeper_agent_rerank_failures_total`` and logged, and
    the fused order's first ``k`` are returned: a failed reranking never fails a search.
    """
    if not hits:
        return []
    started = time.perf_counter()
    try:
        scores = await reranker.rerank(query, [rerank_input(hit) for hit in hits])
    except RerankError as exc:
        reason = "unavailable" if isinstance(exc, RerankUnavailable) else "error"
        RERANK_FAILURES.labels(reason).inc()
        logger.warning("reranking failed, answering in the fused order: %s", exc)
        return list(hits[:k])
    finally:
        RERANK_DURATION.observe(time.perf_counter() - started)
    order = sorted(range(len(hits)), key=lambda i: -scores[i])
    return [dataclasses.replace(hits[i], score=scores[i]) for i in order[:k]]


async def _only_with_web(ctx: RunContext[Deps], tool_def: ToolDefinition) -> ToolDefinition | None:
    return tool_def if ctx.deps.web is not None else None


async def _only_with_sql(ctx: RunContext[Deps], tool_def: ToolDefinition) -> ToolDefinition | None:
    return tool_def if ctx.deps.sql_enabled else None


async def _only_with_memory(
    ctx: RunContext[Deps], tool_def: ToolDefinition
) -> ToolDefinition | None:
    return tool_def if ctx.deps.memory is not None and ctx.deps.user_id else None


MAX_SEARCH_K = 20
MAX_LIST_LIMIT = 200


async def search_passages(
    deps: Deps,
    query: str,
    k: int | None = None,
    pipeline_id: str | None = None,
    metadata_filter: dict[str, Any] | None = None,
) -> list[Passage]:
    """The search behind the agent's and the MCP ``search_documents``: ``k`` within 1-20."""
    if not query.strip():
        raise ToolInputError("query must not be empty")
    size = None if k is None else max(1, min(k, MAX_SEARCH_K))
    return await retrieve(
        deps, query, k=size, pipeline_id=pipeline_id, metadata_filter=metadata_filter
    )


async def document_summaries(
    deps: Deps, pipeline_id: str | None = None, limit: int = 50, offset: int = 0
) -> list[DocumentSummary]:
    """Documents newest first (``limit`` within 1-200), as both tool sets list them."""
    docs = await deps.store.list_documents(
        pipeline_id=pipeline_id, limit=max(1, min(limit, MAX_LIST_LIMIT)), offset=offset
    )
    return [
        DocumentSummary(
            document_id=d.id,
            title=d.title,
            url=d.url,
            mime_type=d.mime_type,
            chunks=d.chunk_count,
            columns=d.schema,
        )
        for d in docs
    ]


async def read_page(
    deps: Deps, document_id: str, offset: int = 0, limit: int | None = None
) -> DocumentPage:
    """``limit`` characters (at most READ_DOCUMENT_MAX_CHARS) of a document from ``offset``."""
    size = max(1, min(limit or deps.read_max_chars, deps.read_max_chars))
    doc = await deps.store.read_document(document_id, max_chars=max(0, offset) + size)
    if doc is None:
        raise ToolInputError(f"no document with id {document_id!r}; use list_documents")
    content = doc.content[max(0, offset) :]
    end = max(0, offset) + len(content)
    return DocumentPage(doc.info, max(0, offset), content, end if doc.truncated else None)


async def tabular_rows(deps: Deps, sql: str) -> str:
    """One read-only SELECT through ``ReadOnlySQL``; a refusal is audited (``sql_refused``)."""
    if not deps.sql_enabled:
        raise ToolInputError("the SQL tool is off (SQL_TOOL_ENABLED=false)")
    try:
        rows = await deps.sql.query(sql.strip().rstrip(";"))
    except SQLToolError as exc:
        # The reason by type only: Postgres's message may quote the query.
        cause = f"({type(exc.__cause__).__name__})" if exc.__cause__ is not None else ""
        audit("sql_refused", f"{type(exc).__name__}{cause}", sql=fingerprint(sql))
        raise ToolInputError(f"the query failed: {exc}") from exc
    return render_rows(rows)


def _memory_of(deps: Deps) -> tuple[MemoryStore, str]:
    if deps.memory is None or not deps.user_id:
        raise ToolInputError("memory is off (MEMORY_ENABLED=false)")
    return deps.memory, deps.user_id


async def remember(deps: Deps, text: str) -> Memory:
    """Keep one fact or preference for the run's user (at most MAX_MEMORY_CHARS characters)."""
    store, user_id = _memory_of(deps)
    content = " ".join(text.split())
    if not content:
        raise ToolInputError("text must not be empty")
    if len(content) > MAX_MEMORY_CHARS:
        raise ToolInputError(f"a memory is at most {MAX_MEMORY_CHARS} characters; shorten it")
    (vector,) = await deps.embedder.embed([content])
    return await store.save(user_id, content, list(vector), session_id=deps.session_id)


async def recall(
    deps: Deps, query: str, k: int = RECALL_K, min_similarity: float = RECALL_MIN_SIMILARITY
) -> list[Memory]:
    """The run's user's memories closest to ``query`` (at most ``k``, 1-20)."""
    store, user_id = _memory_of(deps)
    if not query.strip():
        raise ToolInputError("query must not be empty")
    vector = await deps.embedder.embed_query(query)
    size = max(1, min(k, MAX_SEARCH_K))
    return await store.search(user_id, list(vector), k=size, min_similarity=min_similarity)


def _prompt_text(prompt: object) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        return "\n".join(part for part in prompt if isinstance(part, str))
    return ""


async def memory_instructions(ctx: RunContext[Deps]) -> str | None:
    """The dynamic part of the instructions: with memory on, how to use it and the user's
    memories closest to this turn's question (looked up once per run)."""
    deps = ctx.deps
    if deps.memory is None or not deps.user_id:
        return None
    if deps.recalled is None:
        question = _prompt_text(ctx.prompt)
        deps.recalled = await recall(deps, question) if question.strip() else []
    if not deps.recalled:
        return MEMORY_GUIDANCE
    lines = "\n".join(f"- {m.content}" for m in deps.recalled)
    return f"{MEMORY_GUIDANCE}\n\n{MEMORY_HEADER}\n{lines}"


ATTACHMENTS_HEADER = (
    "Files the user attached to this conversation, as JSON passages (their text, not the "
    "documents'); cite them by their number n like the documents' passages:"
)


async def attachment_instructions(ctx: RunContext[Deps]) -> str | None:
    """The dynamic part of the instructions that gives the model the conversation's attached
    files (none: nothing)."""
    if not ctx.deps.attachments:
        return None
    listed = json.dumps(
        [p.model_dump(mode="json", exclude={"score", "chunk"}) for p in ctx.deps.attachments],
        ensure_ascii=False,
    )
    return f"{ATTACHMENTS_HEADER}\n{listed}"


async def search_documents(
    ctx: RunContext[Deps],
    query: str,
    k: int | None = None,
    pipeline_id: str | None = None,
    metadata_filter: dict[str, Any] | None = None,
) -> list[Passage]:
    """Search the documents for passages relevant to a query (semantic + keyword search).

    Args:
        query: What to look for, in natural language; include names and key terms.
        k: How many passages to return (default 5, at most 20).
        pipeline_id: Only search documents of this source, e.g. "default/handbook".
        metadata_filter: Only passages whose metadata contains these key/value pairs,
            e.g. {"mime_type": "application/pdf"}.

    Returns:
        Passages numbered for citation, each with its document title and URL.
    """
    with _counted(SEARCH_TOOL):
        return await search_passages(ctx.deps, query, k, pipeline_id, metadata_filter)


async def list_documents(
    ctx: RunContext[Deps], pipeline_id: str | None = None, limit: int = 50
) -> list[DocumentSummary]:
    """List available documents, newest first, with their ids and, for spreadsheets, columns.

    Args:
        pipeline_id: Only documents of this source.
        limit: At most this many documents (1-200).
    """
    with _counted("list_documents"):
        return await document_summaries(ctx.deps, pipeline_id, limit)


async def read_document(ctx: RunContext[Deps], document_id: str) -> str:
    """Read a whole document's text (long documents are cut off at a limit).

    Args:
        document_id: The `document_id` from `search_documents` or `list_documents`.
    """
    with _counted("read_document"):
        page = await read_page(ctx.deps, document_id)
        note = "\n\n[... truncated]" if page.next_offset is not None else ""
        return f"# {page.info.title}\nURL: {page.info.url or '-'}\n\n{page.content}{note}"


async def query_tabular_rows(ctx: RunContext[Deps], sql: str) -> str:
    """Run one read-only PostgreSQL SELECT over rows of spreadsheets and CSV files.

    Tables you can read:
      - tabular_datasets(dataset_id, pipeline_id, title, url, mime_type, schema jsonb,
        updated_at): one row per tabular file; schema maps sheet name ('' for CSV) to columns.
      - document_rows(dataset_id, sheet, row_number, row_data jsonb): one row per data row;
        read a column with row_data->>'Column name' and cast as needed, e.g.
        (row_data->>'Revenue')::numeric.
    Writes, DDL and other tables are refused; results are capped.

    Args:
        sql: A single SELECT statement (no trailing semicolon needed).
    """
    with _counted("query_tabular_rows"):
        return await tabular_rows(ctx.deps, sql)


async def web_search(ctx: RunContext[Deps], query: str) -> str:
    """Search the public web when the documents do not cover a question.

    Args:
        query: Search terms.
    """
    with _counted("web_search"):
        # The tool is registered only when web search is configured (B101 does not apply).
        assert ctx.deps.web is not None  # nosec B101
        try:
            results = await ctx.deps.web.search(query)
        except WebSearchError as exc:
            raise ModelRetry(str(exc)) from exc
        if not results:
            return "(no web results)"
        return "\n\n".join(f"{r.title}\n{r.url}\n{r.snippet}" for r in results)


class RecalledMemory(BaseModel):
    memory_id: int
    content: str
    score: float | None


async def save_memory(ctx: RunContext[Deps], text: str) -> str:
    """Remember a fact or preference about the user for later conversations.

    Save what the user states about themselves or their work that will still matter later
    (their team, role, projects, the language or format they want), or anything they
    explicitly ask you to remember. Do not save passing chat, questions, or facts from the
    documents. Write one short, self-contained sentence in the user's terms,
    e.g. "The user's team is Falcon".

    Args:
        text: The fact or preference, one sentence (at most 500 characters).
    """
    with _counted(SAVE_MEMORY_TOOL):
        try:
            memory = await remember(ctx.deps, text)
        except MemoryFull as exc:
            return (
                f"Not remembered: {exc}. The user can forget memories they no longer need "
                "in the page's memory panel (or DELETE /api/memories/{id})."
            )
        return f"Remembered: {memory.content}"


async def search_memories(ctx: RunContext[Deps], query: str) -> list[RecalledMemory]:
    """Search what this user asked you to remember in earlier conversations.

    Args:
        query: What to look for, e.g. "the user's team".
    """
    with _counted("search_memories"):
        found = await recall(ctx.deps, query, k=5, min_similarity=0.0)
        return [RecalledMemory(memory_id=m.id, content=m.content, score=m.score) for m in found]


def agent_tools() -> list[Tool[Deps]]:
    """The tools the model may call; each docstring is the tool's description for the model.

    Fresh objects per agent: adding a tool to an agent sets the tool's retry count on it.
    """
    return [
        Tool(search_documents, name=SEARCH_TOOL),
        Tool(list_documents),
        Tool(read_document),
        Tool(query_tabular_rows, prepare=_only_with_sql),
        Tool(web_search, prepare=_only_with_web),
        Tool(save_memory, name=SAVE_MEMORY_TOOL, prepare=_only_with_memory),
        Tool(search_memories, prepare=_only_with_memory),
    ]


def build_agent(model: Model) -> Agent[Deps, str]:
    return Agent(
        model,
        deps_type=Deps,
        output_type=str,
        instructions=[INSTRUCTIONS, attachment_instructions, memory_instructions],
        retries=2,
        name="ragkeeper",
        tools=agent_tools(),
    )
