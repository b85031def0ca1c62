"""The README's example questions, answered from ``make run``'s own data.

``examples/docs`` is ingested by the ingestion job exactly as ``make run`` runs it
(``scripts/local_stack.py``: the CLI in a subprocess, the offline embedder) into a fresh
database; the agent then runs with its configured parts (offline embedder, offline
extractive model, ``SEARCH_K``'s default) and is asked over HTTP, through both chat routes
the README shows. The answers must quote the sentence that answers the question, cite
the document it comes from, and never quote a heading or the same sentence twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from ragkeeper_agent.extractive import LABEL
from scripts import local_stack
from tests.support import shared_tmp_dir

from .conftest import RunningServer, auth, serve, settings_for
from .test_extractive import DOCS, assert_well_formed, quotes

SOURCE_LINE = re.compile(r"^((?:\[\d+\](?:, )?)+) (.+)$")


@dataclass(frozen=True)
class Example:
    question: str
    answer: str
    """Text the answer must quote."""
    document: str
    """File the quote must cite."""


RESET = Example("How do I reset the Kestrel thermostat?", "30 seconds", "kestrel-quick-start.txt")
PRICE = Example("How much does the Kestrel cost?", "229", "price-list.csv")


@pytest.fixture(scope="module")
async def stack(database_url: str) -> AsyncIterator[RunningServer]:
    """examples/docs ingested as `make run` does, and the agent serving it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "EMBEDDING_"))}
    with shared_tmp_dir("rk-examples") as data:
        env = local_stack.stack_env(database_url, data, clean)
        code, stats = await asyncio.to_thread(local_stack.ingest, DOCS, env)
    assert code == 0, stats
    assert json.loads(stats)["files_added"] == len(list(DOCS.iterdir()))
    settings = settings_for(database_url)
    assert (settings.embedding.provider, settings.llm_provider) == ("offline", "")
    async with serve(settings) as running:
        yield running


async def search(stack: RunningServer, question: str) -> list[dict[str, Any]]:
    async with stack.client() as c:
        r = await c.post("/api/search", json={"query": question}, headers=auth("me"))
    assert r.status_code == 200, r.text
    hits: list[dict[str, Any]] = r.json()
    return hits


def describe(hits: list[dict[str, Any]]) -> str:
    return "\n".join(f"  {h['title']}: {h['content'][:80]!r}" for h in hits)


async def ask_ndjson(stack: RunningServer, question: str) -> tuple[str, dict[int, str]]:
    """The README's curl: the answer and the document (file name) of each source number."""
    async with stack.client() as c:
        r = await c.post(
            "/api/pydantic-agent", json={"query": question, "user_id": "me"}, headers=auth("me")
        )
    assert r.status_code == 200, r.text
    final = json.loads(r.text.strip().splitlines()[-1])
    assert final["complete"] is True and "error" not in final, final
    files = {s["n"]: s["document_id"].rsplit(":", 1)[1] for s in final["sources"]}
    return final["text"], files


async def ask_openai(stack: RunningServer, question: str) -> tuple[str, dict[int, str]]:
    """The README's OpenAI client: only text comes back, so the sources are in the text."""
    body = {"model": "ragkeeper", "messages": [{"role": "user", "content": question}]}
    async with stack.client() as c:
        r = await c.post("/v1/chat/completions", json=body, headers=auth("me"))
    assert r.status_code == 200, r.text
    text: str = r.json()["choices"][0]["message"]["content"]
    files: dict[int, str] = {}
    for line in text.split("\n\nSources:\n", 1)[1].splitlines():
        match = SOURCE_LINE.match(line)
        assert match, f"not a source line: {line!r}"
        for n in re.findall(r"\d+", match[1]):
            files[int(n)] = match[2].rsplit("/", 1)[-1]
    return text, files


@pytest.mark.parametrize("example", [RESET, PRICE], ids=["reset", "price"])
async def test_readme_question_is_answered_from_the_right_document(
    stack: RunningServer, example: Example
) -> None:
    hits = await search(stack, example.question)
    for ask in (ask_ndjson, ask_openai):
        text, files = await ask(stack, example.question)
        assert text.startswith(LABEL)
        answering = [n for quote, n in quotes(text) if example.answer in quote]
        assert answering, (
            f"{ask.__name__}: no quote contains {example.answer!r}:\n{text}\n"
            f"/api/search returned:\n{describe(hits)}"
        )
        assert files[answering[0]] == example.document, (text, files)


@pytest.mark.parametrize("example", [RESET, PRICE], ids=["reset", "price"])
async def test_readme_answers_quote_no_heading_and_no_sentence_twice(
    stack: RunningServer, example: Example
) -> None:
    for ask in (ask_ndjson, ask_openai):
        text, files = await ask(stack, example.question)
        assert quotes(text), text
        assert_well_formed(text)
        cited = {n for _, n in quotes(text)}
        assert cited <= set(files), (text, files)
        sources = text.split("\n\nSources:\n", 1)[1].splitlines()
        assert len(sources) == len({files[n] for n in cited}), "one source line per document"
