"""The offline model: answers by quoting retrieved passages, no language model involved.

With no ``LLM_*`` settings the stack still works end to end (``make run`` needs no
keys): this Pydantic AI ``FunctionModel`` plays the model's part. On a user prompt
it calls the real ``search_documents`` tool; on the tool's result it picks the
sentences sharing the most words with the question and quotes them with
``[n]`` citations and a source list. The answer is labelled as extractive, and
when no sentence shares a content word with the question it says that the
documents do not contain the answer. Text is streamed line by line (one quoted
sentence per line; long lines cut at word boundaries), so the streaming routes behave
as they do with a real model — visibly incremental — without paying Pydantic AI's
per-event cost for every few words.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from .agent import SEARCH_TOOL, Passage

MODEL_NAME = "ragkeeper-extractive"
LABEL = "Extractive answer (no language model configured)"
MAX_SENTENCES = 3
PIECE_MAX_CHARS = 160
_PASSAGES = TypeAdapter(list[Passage])
_WORD = re.compile(r"[\w'-]+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_STOPWORD_TEXT = """
    a about above after again all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me more
    most my no nor not now of off on once only or other our ours out over own same she should so
    some such than that the their theirs them then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you
    your yours tell explain describe please give show list"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def _terms(text: str) -> set[str]:
    return {w for w in (m.lower() for m in _WORD.findall(text)) if len(w) > 1} - _STOPWORDS


def _last_prompt(messages: list[ModelMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart):
                    if isinstance(part.content, str):
                        return part.content
                    return " ".join(c for c in part.content if isinstance(c, str))
    return ""


def _search_results(messages: list[ModelMessage]) -> list[Passage] | None:
    """Passages from the newest request if it carries our search tool's result."""
    last = messages[-1] if messages else None
    if not isinstance(last, ModelRequest):
        return None
    for part in last.parts:
        if isinstance(part, ToolReturnPart) and part.tool_name == SEARCH_TOOL:
            try:
                return _PASSAGES.validate_python(part.content, from_attributes=True)
            except ValidationError:
                return []
    return None


def _units(content: str) -> list[tuple[bool, str]]:
    """Split a passage into (is_heading, text) units: headings, then sentences.

    Blocks are separated by blank lines; hard-wrapped lines inside a block are joined
    so a sentence is never cut at a line break.
    """
    units: list[tuple[bool, str]] = []
    for block in re.split(r"\n\s*\n", content):
        lines: list[str] = []
        for line in block.splitlines():
            if line.lstrip().startswith("#"):
                if lines:
                    units.extend((False, x) for x in _SENTENCE.split(" ".join(lines)))
                    lines = []
                units.append((True, line.strip().lstrip("#").strip()))
            else:
                lines.append(line.strip())
        if lines:
            units.extend((False, x) for x in _SENTENCE.split(" ".join(lines)))
    return [(h, " ".join(t.split())) for h, t in units if len(t.strip()) >= 3]


def compose_answer(question: str, passages: list[Passage]) -> str:
    """Quote the best-matching sentences with citations, or say there is no answer.

    Question words are weighted by how rare they are among the retrieved sentences
    (a product name that is everywhere counts less than "warranty"), and a heading
    that matches the question lifts the sentences under it.
    """
    wanted = _terms(question)
    units = [(rank, p, _units(p.content)) for rank, p in enumerate(passages)]
    df: dict[str, int] = {}
    total = 0
    for _, _, parts in units:
        for _, text in parts:
            total += 1
            for term in wanted & _terms(text):
                df[term] = df.get(term, 0) + 1

    def weight(terms: set[str]) -> float:
        return sum(math.log(1 + total / df[t]) for t in wanted & terms)

    scored: list[tuple[float, int, str, int]] = []  # (score, -order, sentence, source n)
    for rank, passage, parts in units:
        heading_terms: set[str] = set()
        for is_heading, text in parts:
            if is_heading:
                heading_terms = _terms(text)
                continue
            # a word counts once, whether it is in the sentence or in its heading
            score = weight(_terms(text) | heading_terms)
            if score:
                # Prefer weight, then better-ranked passages, then earlier sentences.
                scored.append((score - rank * 0.01, -len(scored), text, passage.n))
    if not scored:
        return f"{LABEL}: the documents do not contain an answer to this question."
    best = sorted(scored, reverse=True)[:MAX_SENTENCES]
    cited = sorted({n for *_, n in best})
    by_n = {p.n: p for p in passages}
    quotes = "\n".join(f"> {sentence} [{n}]" for _, _, sentence, n in best)
    sources = "\n".join(
        f"[{n}] {by_n[n].title}" + (f" — {by_n[n].url}" if by_n[n].url else "") for n in cited
    )
    return (
        f"{LABEL}. These passages from the documents best match your question:\n\n"
        f"{quotes}\n\nSources:\n{sources}"
    )


def _search_args(messages: list[ModelMessage]) -> dict[str, Any]:
    return {"query": _last_prompt(messages) or "overview"}


def _reply(messages: list[ModelMessage]) -> str | dict[str, Any]:
    """Either the answer text, or the arguments of the search call to make first."""
    passages = _search_results(messages)
    if passages is None:
        last = messages[-1] if messages else None
        if isinstance(last, ModelRequest) and any(
            isinstance(p, UserPromptPart) for p in last.parts
        ):
            return _search_args(messages)
        return f"{LABEL}: the document search failed, so there is nothing to quote."
    return compose_answer(_last_prompt(messages), passages)


def _pieces(text: str) -> list[str]:
    """Split text into lines for streaming; blank lines ride on the line before them.

    Lines longer than ``PIECE_MAX_CHARS`` are cut after a space, so a long quote still
    arrives in a few pieces. Joining the pieces gives back ``text`` exactly.
    """
    pieces: list[str] = []
    for line in text.splitlines(keepends=True):
        if pieces and not line.strip():
            pieces[-1] += line
            continue
        while len(line) > PIECE_MAX_CHARS:
            cut = line.rfind(" ", 0, PIECE_MAX_CHARS) + 1 or PIECE_MAX_CHARS
            pieces.append(line[:cut])
            line = line[cut:]
        pieces.append(line)
    return pieces


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:16]}"


async def _respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    reply = _reply(messages)
    if isinstance(reply, dict):
        return ModelResponse(parts=[ToolCallPart(SEARCH_TOOL, reply, tool_call_id=_call_id())])
    return ModelResponse(parts=[TextPart(reply)])


async def _respond_stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    reply = _reply(messages)
    if isinstance(reply, dict):
        yield {0: DeltaToolCall(SEARCH_TOOL, json.dumps(reply), tool_call_id=_call_id())}
        return
    for piece in _pieces(reply):
        yield piece


def extractive_model() -> FunctionModel:
    """A model that needs no network and no keys (and passes ALLOW_MODEL_REQUESTS=False)."""
    return FunctionModel(_respond, stream_function=_respond_stream, model_name=MODEL_NAME)
