"""The offline model: answers by quoting retrieved passages, no language model involved.

With no ``LLM_*`` settings the stack still works end to end (``make run`` needs no
keys): this Pydantic AI ``FunctionModel`` plays the model's part. On a user prompt
it calls the real ``search_documents`` tool; on the tool's result it quotes the
sentences that best match the question, each with its ``[n]`` citation, and ends
with a ``Sources:`` list of one line per cited document. The answer is labelled as
extractive, and when no sentence shares a content word with the question it says
that the documents do not contain the answer. Text is streamed line by line (one
quoted sentence per line; long lines cut at word boundaries), so the streaming routes
behave as they do with a real model — visibly incremental — without paying Pydantic
AI's per-event cost for every few words.

How sentences are chosen (:func:`compose_answer`):

- Passages are cut into units: heading lines (Markdown ``#``, ALL-CAPS lines such as
  ``RESETTING``, short Title Case lines, bare labels such as ``Sources:``, and the
  ``Columns:`` line of a rendered table) and sentences; each line of a rendered table
  (``column: value | ...``, see ``ragkeeper_knowledge.extraction.tabular``) is one unit.
  Headings are never quoted, and neither is a unit with fewer than three words or a
  fragment left by a chunk's overlap (a passage starting mid-sentence or mid-row).
- The same sentence is quoted once: units are compared with whitespace and case
  normalised, and a unit contained in another one is dropped (overlapping chunks
  repeat text).
- Words are compared by a light stem (``resetting``/``resets`` -> ``reset``). Each
  question word is a concept; a small map of intents (:data:`INTENTS`) turns a
  question about a price ("cost", "price", "how much is/does ...") into one concept
  matched by any price word or currency (``price``, ``EUR``, ``NOK``, ``$`` ...); the
  search the model runs adds the intent's usual word ("price") to the question, as a
  language model would when it words its own query (:func:`search_query`).
- A concept counts once per unit, whether it is in the sentence or in the heading
  above it, weighted by how rare it is among the retrieved units, squared: one rare
  word ("reset") outweighs two that are everywhere ("Kestrel", "thermostat").
- A table row is quoted by its first column and the columns that match the question,
  with ``…`` for the columns left out.

Attachments (docs/agent.md, "Files in the chat"): the passages of the files attached to the
conversation reach the model as JSON in its instructions (``agent.attachment_instructions``);
they are quoted from like the search's passages, by the numbers they were given.

Memory (docs/agent.md, "Memory"): when the ``save_memory`` tool is offered, an explicit
"remember that …" message (no question mark) calls it with the rest of the message, and the
answer confirms it. The memories the agent recalled for a question reach the model in its
instructions (``agent.memory_instructions``); those sharing a content word with the question
are quoted before the passages.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
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

from .agent import ATTACHMENTS_HEADER, MEMORY_HEADER, SAVE_MEMORY_TOOL, SEARCH_TOOL, Passage

MODEL_NAME = "ragkeeper-extractive"
LABEL = "Extractive answer (no language model configured)"
MAX_SENTENCES = 3
PIECE_MAX_CHARS = 160
MIN_WORDS = 3
"""A unit with fewer words (letters or digits) than this has no sentence content."""
TITLE_MAX_WORDS = 8
"""A line this short in Title Case with no final punctuation is a heading."""
SHORT_TITLE_WORDS = 5
"""... or this short, capitalised, without commas or colons."""
HEADING_SHARE = 0.8
"""What a concept found only in a unit's heading counts, against one in the unit itself."""

_PASSAGES = TypeAdapter(list[Passage])
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_CURRENCY = frozenset("$€£¥")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[^\sa-z])")
_MD_HEADING = re.compile(r"\s{0,3}#{1,6}\s")
_LIST_MARKER = re.compile(r"\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_LABEL_LINE = re.compile(r"[^\W\d_][\w ]{0,40}:")
_LABEL_START = re.compile(r"[A-Z][\w()/.+-]*(?: [\w()/.+-]+){0,3}: ")
_CELL = re.compile(r"[^\W_][\w ()/.+-]{0,60}: ")
_STOPWORD_TEXT = """
    a about above after again all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me more
    most my no nor not now of off on once only or other our ours out over own same she should so
    some such than that the their theirs them then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you
    your yours tell explain describe please give show list much many"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_MINOR_WORDS = frozenset(
    {"a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "with"}
)


def _stem(word: str) -> str:
    """A light suffix stripper: plurals, -ing, -ed, doubled consonants, a final e.

    ``resetting``, ``resets`` and ``reset`` give ``reset``; ``prices``/``pricing`` give
    ``pric``. Only the question and the passages are compared, so a stem needs to be
    consistent, not a word.
    """
    w = word.lower().replace("\u2019", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) <= 3 or not w.isalpha():
        return w
    if w.endswith(("ies", "ied")) and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith(("sses", "xes", "zes", "ches", "shes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix, shortest in (("ing", 6), ("ed", 5)):
        stem = w[: -len(suffix)]
        if w.endswith(suffix) and len(w) >= shortest and re.search("[aeiouy]", stem):
            w = stem
            break
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiousy":
        w = w[:-1]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def _terms(text: str) -> set[str]:
    """Content words of ``text``, stemmed, plus the currency symbols it contains."""
    words = (w.lower() for w in _WORD.findall(text))
    found = {_stem(w) for w in words if len(w) > 1 and w not in _STOPWORDS}
    return found | (_CURRENCY & set(text))


@dataclass(frozen=True, slots=True)
class Intent:
    """A kind of question whose answer is worded differently from the question."""

    name: str
    asked: re.Pattern[str]
    """Matches questions of this kind."""
    words: frozenset[str]
    """Stems (or symbols) that answer it; all of them count as one concept."""
    search: str
    """Added to the search query, as a model would word it ("price" for "how much")."""


def _intent(name: str, asked: str, words: str, search: str) -> Intent:
    stems = frozenset(_stem(w) if w not in _CURRENCY else w for w in words.split())
    return Intent(name, re.compile(asked, re.IGNORECASE), stems, search)


INTENTS: tuple[Intent, ...] = (
    _intent(
        "price",
        r"\b(?:cost|costs|price|prices|priced|pricing"
        r"|how much (?:is|are|was|does|do|did|will|would)\b)",
        "cost price pricing fee eur euro usd dollar gbp nok sek dkk chf $ € £",
        "price",
    ),
)
"""Question intents: small and general on purpose (an LLM needs none of this)."""


def _concepts(question: str) -> list[frozenset[str]]:
    """What a unit must share with the question: one set per word, one per intent."""
    concepts: list[frozenset[str]] = []
    absorbed: set[str] = set()
    for intent in INTENTS:
        if intent.asked.search(question):
            concepts.append(intent.words)
            absorbed |= intent.words
    concepts.extend(frozenset({t}) for t in sorted(_terms(question) - absorbed))
    return concepts


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


# ------------------------------------------------------------------ cutting passages into units


@dataclass(frozen=True, slots=True)
class Unit:
    kind: str
    """``heading``, ``sentence`` or ``row`` (one line of a rendered table)."""
    text: str
    block: int
    """Which paragraph (block between blank lines) of the passage the unit is in."""


def _is_row(line: str) -> bool:
    """A table line: ``column: value | column: value`` (rendered rows) or ``a | b | c``."""
    return " | " in line


def _cells(row: str) -> list[str] | None:
    """The ``column: value`` cells of a rendered row, or ``None`` for another kind of line."""
    cells = row.split(" | ")
    return cells if all(_CELL.match(c) for c in cells) else None


def _is_title(line: str, following: str | None) -> bool:
    """A short line with no final punctuation, not followed by a lowercase line: Title Case
    up to ``TITLE_MAX_WORDS`` words ("Kestrel K2 Technical Datasheet"), or, with a line
    after it, a capitalised phrase up to ``SHORT_TITLE_WORDS`` ("Compliance and warranty")."""
    words = line.split()
    if not words or len(words) > TITLE_MAX_WORDS or line[-1] in ".!?:;,":
        return False
    if words[-1].lower() in _MINOR_WORDS or (following and not following[0].isupper()):
        return False
    lettered = [w for w in words if any(c.isalpha() for c in w)]
    if not lettered or not lettered[0][0].isupper():
        return False
    if following and len(words) <= SHORT_TITLE_WORDS and not any(c in line for c in ",:;()"):
        return True
    return all(w[0].isupper() or w[0].isdigit() or w.lower() in _MINOR_WORDS for w in lettered)


def _heading(line: str, previous: str | None, following: str | None) -> str | None:
    """The heading's text if ``line`` is a heading line, else ``None``."""
    if _MD_HEADING.match(line):
        return line.strip().lstrip("#").strip()
    letters = [c for c in line if c.isalpha()]
    if len(letters) >= 2 and not any(c.islower() for c in letters):
        return line  # ALL CAPS
    if line.startswith("Columns: "):
        return line  # the header line of a rendered table
    if _is_row(line):  # a table's first line is its header, unless it names its columns
        first = previous is None or not _is_row(previous)
        named = any(_CELL.match(cell) for cell in line.split(" | "))
        return line if first and not named else None
    if _LABEL_LINE.fullmatch(line) and len(line.split()) <= 3:
        return line[:-1]  # a bare label such as "Sources:"
    ends_sentence = previous is None or previous[-1] in ".!?:" or previous[-1].isdigit()
    if ends_sentence and _is_title(line, following):
        return line
    return None


def _sentences(lines: list[str], block: int) -> list[Unit]:
    return [Unit("sentence", s, block) for s in _SENTENCE.split(" ".join(lines)) if s]


def _units(content: str) -> list[Unit]:
    """Split a passage into headings, sentences and table rows, in order.

    Blocks are separated by blank lines; hard-wrapped lines inside a block are joined
    so a sentence is never cut at a line break, except where a line is a heading, a
    table row or a list item.
    """
    units: list[Unit] = []
    for b, block in enumerate(re.split(r"\n\s*\n", content)):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        text: list[str] = []
        for i, line in enumerate(lines):
            previous = lines[i - 1] if i else None
            following = lines[i + 1] if i + 1 < len(lines) else None
            heading = _heading(line, previous, following)
            row = heading is None and _is_row(line)
            marker = _LIST_MARKER.match(line)
            # a list item or a "Label: ..." line starts a unit even after a line with no stop
            starts = marker or (text and _LABEL_START.match(line))
            if heading is not None or row or starts:
                units.extend(_sentences(text, b))
                text = []
            if heading is not None:
                units.append(Unit("heading", heading, b))
            elif row:
                units.append(Unit("row", line, b))
            else:
                text.append(line[marker.end() :] if marker else line)
        units.extend(_sentences(text, b))
    return [Unit(u.kind, " ".join(u.text.split()), u.block) for u in units if u.text.strip()]


def _fragment(unit: Unit) -> bool:
    """The cut-off start of a passage: mid-sentence (lowercase) or mid-row (no column name)."""
    if unit.kind == "row":
        cells = unit.text.split(" | ")
        return _cells(unit.text) is None and _cells(" | ".join(cells[1:])) is not None
    return unit.text[0].islower()


def _has_content(text: str) -> bool:
    words = _WORD.findall(text)
    return len(words) >= MIN_WORDS and any(c.isalpha() for c in text)


# ------------------------------------------------------------------ choosing sentences


@dataclass(slots=True)
class _Candidate:
    unit: Unit
    key: str
    terms: set[str]
    heading_terms: set[str]
    passage: Passage
    rank: int
    order: int
    score: float = 0.0


def _candidates(passages: list[Passage]) -> list[_Candidate]:
    """Quotable units of all passages, each once, with the terms of the heading above.

    A heading covers the paragraph right under it (the answer under an FAQ question, the
    lines under ``RESETTING``), not a footer further down.
    """
    found: list[_Candidate] = []
    for rank, passage in enumerate(passages):
        heading_terms: set[str] = set()
        covered: int | None = None  # the block the heading covers, once known
        for position, unit in enumerate(_units(passage.content)):
            if unit.kind == "heading":
                heading_terms, covered = _terms(unit.text), None
                continue
            if covered is None:
                covered = unit.block
            elif unit.block != covered:
                heading_terms = set()
            if not _has_content(unit.text) or (position == 0 and _fragment(unit)):
                continue
            key = unit.text.casefold()
            terms = _terms(unit.text)
            found.append(_Candidate(unit, key, terms, heading_terms, passage, rank, len(found)))
    return _distinct(found)


def _distinct(found: list[_Candidate]) -> list[_Candidate]:
    """Drop repeats: the same text again, or a text contained in another unit's text."""
    kept: list[_Candidate] = []
    seen: set[str] = set()
    for c in found:
        if c.key in seen:
            continue
        seen.add(c.key)
        kept.append(c)
    return [c for c in kept if not any(c.key in o.key and c is not o for o in kept)]


def _score(candidates: list[_Candidate], concepts: list[frozenset[str]]) -> None:
    """Weight each concept by its rarity among the candidates; sum what each one shares.

    A concept counts once per unit, whether it is in the unit or in its heading (a
    heading that matches lifts the sentences under it, a little less than their own words).
    """
    total = len(candidates)
    df = [
        sum(1 for c in candidates if concept & (c.terms | c.heading_terms)) for concept in concepts
    ]
    weights = [math.log(1 + total / n) ** 2 if n else 0.0 for n in df]
    for c in candidates:
        shared = 0.0
        for concept, weight in zip(concepts, weights, strict=True):
            if concept & c.terms:
                shared += weight
            elif concept & c.heading_terms:
                shared += weight * HEADING_SHARE
        # Prefer weight, then better-ranked passages, then earlier sentences.
        c.score = shared - c.rank * 0.01 if shared else 0.0


def _quote(unit: Unit, concepts: list[frozenset[str]]) -> str:
    """A sentence as it is; a table row as its first column and the matching ones."""
    cells = _cells(unit.text) if unit.kind == "row" else None
    if cells is None:
        return unit.text
    wanted = frozenset().union(*concepts) if concepts else frozenset()
    parts: list[str] = []
    for i, cell in enumerate(cells):
        if i == 0 or wanted & _terms(cell):
            parts.append(cell)
        elif parts[-1] != "…":
            parts.append("…")
    return " | ".join(parts)


def compose_answer(question: str, passages: list[Passage]) -> str:
    """Quote the best-matching sentences with citations, or say there is no answer."""
    concepts = _concepts(question)
    candidates = _candidates(passages)
    _score(candidates, concepts)
    scored = [c for c in candidates if c.score > 0]
    if not scored:
        return f"{LABEL}: the documents do not contain an answer to this question."
    best = sorted(scored, key=lambda c: (-c.score, c.order))[:MAX_SENTENCES]
    quotes = "\n".join(f"> {_quote(c.unit, concepts)} [{c.passage.n}]" for c in best)
    by_document: dict[str, list[Passage]] = {}
    for c in sorted(best, key=lambda c: c.passage.n):
        cited = by_document.setdefault(c.passage.document_id, [])
        if c.passage not in cited:
            cited.append(c.passage)
    sources = "\n".join(
        ", ".join(f"[{p.n}]" for p in cited)
        + f" {cited[0].title}"
        + (f" — {cited[0].url}" if cited[0].url else "")
        for cited in by_document.values()
    )
    return (
        f"{LABEL}. These passages from the documents best match your question:\n\n"
        f"{quotes}\n\nSources:\n{sources}"
    )


def search_query(question: str) -> str:
    """The search the offline model runs: the question, plus the word its intents are
    usually written with in documents ("How much does X cost?" also searches "price")."""
    extra = [
        i.search
        for i in INTENTS
        if i.asked.search(question) and _stem(i.search) not in _terms(question)
    ]
    return " ".join([question, *extra]) if question else "overview"


SEARCH_K = 10
"""Passages the offline model asks for: it quotes at most MAX_SENTENCES of them, and a wider
pool lets the sentence that answers win even when its passage ranks below the fifth."""


_REMEMBER = re.compile(
    r"\s*(?:please\s+)?remember(?:\s+that)?\s*[:,]?\s+(?P<fact>[^?]+?)[\s.!]*", re.I | re.S
)
MEMORY_LABEL = "From what you asked me to remember"


def remember_request(prompt: str) -> str | None:
    """The fact of an explicit "remember that …" message, or None for anything else."""
    found = _REMEMBER.fullmatch(prompt)
    return " ".join(found["fact"].split()) if found else None


def recalled_memories(instructions: str | None) -> list[str]:
    """The memories listed under ``agent.MEMORY_HEADER`` in the run's instructions."""
    if not instructions or MEMORY_HEADER not in instructions:
        return []
    memories: list[str] = []
    for line in instructions.split(MEMORY_HEADER, 1)[1].strip().splitlines():
        if not line.startswith("- "):
            break
        memories.append(line[2:].strip())
    return memories


def attached_passages(instructions: str | None) -> list[Passage]:
    """The passages of the conversation's attached files, listed as JSON under
    ``agent.ATTACHMENTS_HEADER`` in the run's instructions (none: empty)."""
    if not instructions or ATTACHMENTS_HEADER not in instructions:
        return []
    listed = instructions.split(ATTACHMENTS_HEADER, 1)[1].lstrip()
    try:
        found, _ = json.JSONDecoder().raw_decode(listed)
        return [Passage(score=1.0, **item) for item in found]
    except (ValueError, TypeError):
        return []


def with_memories(answer: str, question: str, memories: list[str]) -> str:
    """``answer`` after the memories that share a content word with the question, if any."""
    asked = _terms(question)
    relevant = [m for m in memories if _terms(m) & asked]
    if not relevant:
        return answer
    listed = "\n".join(f"- {m}" for m in relevant)
    return f"{MEMORY_LABEL}:\n{listed}\n\n{answer}"


def _saved_memory(messages: list[ModelMessage]) -> str | None:
    """The save tool's result if the newest request carries it."""
    last = messages[-1] if messages else None
    if isinstance(last, ModelRequest):
        for part in last.parts:
            if isinstance(part, ToolReturnPart) and part.tool_name == SAVE_MEMORY_TOOL:
                return str(part.content)
    return None


def _search_args(messages: list[ModelMessage]) -> dict[str, Any]:
    return {"query": search_query(_last_prompt(messages)), "k": SEARCH_K}


def _reply(messages: list[ModelMessage], info: AgentInfo) -> str | tuple[str, dict[str, Any]]:
    """Either the answer text, or the tool to call first and its arguments."""
    saved = _saved_memory(messages)
    if saved is not None:
        return f"{LABEL}. {saved}"
    passages = _search_results(messages)
    question = _last_prompt(messages)
    if passages is None:
        last = messages[-1] if messages else None
        if isinstance(last, ModelRequest) and any(
            isinstance(p, UserPromptPart) for p in last.parts
        ):
            fact = remember_request(question)
            if fact and any(t.name == SAVE_MEMORY_TOOL for t in info.function_tools):
                return SAVE_MEMORY_TOOL, {"text": fact}
            return SEARCH_TOOL, _search_args(messages)
        return f"{LABEL}: the document search failed, so there is nothing to quote."
    answer = compose_answer(question, attached_passages(info.instructions) + passages)
    return with_memories(answer, question, recalled_memories(info.instructions))


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
    reply = _reply(messages, info)
    if isinstance(reply, tuple):
        return ModelResponse(parts=[ToolCallPart(*reply, tool_call_id=_call_id())])
    return ModelResponse(parts=[TextPart(reply)])


async def _respond_stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    reply = _reply(messages, info)
    if isinstance(reply, tuple):
        tool, args = reply
        yield {0: DeltaToolCall(tool, json.dumps(args), tool_call_id=_call_id())}
        return
    for piece in _pieces(reply):
        yield piece


def extractive_model() -> FunctionModel:
    """A model that needs no network and no keys (and passes ALLOW_MODEL_REQUESTS=False)."""
    return FunctionModel(_respond, stream_function=_respond_stream, model_name=MODEL_NAME)
