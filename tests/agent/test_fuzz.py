"""Property-based fuzzing of the agent API against its own OpenAPI document (schemathesis).

Every operation of ``/openapi.json`` is called through a real uvicorn server (the whole
middleware stack: size limit, text rule, request ids, security headers) with a valid token,
the offline extractive model and the seeded handbook:

- ``test_operations``: schemathesis' examples, coverage (boundary and invalid values of every
  constraint) and fuzzing phases, positive and negative data, every check it has;
- ``test_stateful``: its state machine over the links between operations (a chat turn leaves
  a conversation that the conversation routes then list, read and continue).

The seed is fixed and the example database off, so a run is the same run every time. A
failure is the app or its document being wrong: fix the one that is wrong; the only rules a
generated request is made to follow (:func:`_ends_with_a_question`, :func:`_readable_files`)
are ones JSON Schema cannot state, and they say why.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode

from ragkeeper_agent import create_app
from ragkeeper_agent.openapi import NDJSON

from .conftest import make_token, serve, settings_for

SEED = 20261130
# Examples per operation for the fuzzing phase (the coverage phase adds its own cases) and
# the stateful runs: about 50 s on two cores, with coverage measured (make test).
MAX_EXAMPLES = 60
STATEFUL_SCENARIOS = 40
STATEFUL_STEPS = 6

FUZZER = "fuzzer"
TOKEN = make_token(FUZZER, exp=2**31 - 1)
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        # The document's security scheme: schemathesis also sends requests without it.
        "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none", "deterministic": True},
        "phases": {"stateful": {"max-steps": STATEFUL_STEPS}},
        # Checks: all of schemathesis' built-in ones, its default. `max_response_time` is off
        # until given a limit, and stays off: a turn's time is the model's and the machine's,
        # which a run on two cores cannot hold to a meaningful bound. Three have nothing to act
        # on here and pass: `use_after_free` and `ensure_resource_availability` follow an
        # operation that deletes or creates a resource to the one that reads it (this API
        # deletes nothing, and the chat route's new conversation id is in its last NDJSON
        # line, which no link expression can address), `object_level_authorization` replays
        # reads as a second identity (schemathesis takes those only from a WFC auth file).
    }
)

# The document is the one a server with these settings serves (test_document_is_served).
schema = schemathesis.openapi.from_dict(
    create_app(settings_for("postgresql://unused/db")).openapi(), config=CONFIG
)


@schemathesis.deserializer(NDJSON)
def _ndjson(_context: Any, response: Any) -> list[Any]:
    """The chat route's lines, so its answers are checked against the document's ``schema``
    for the stream (an array of lines)."""
    return [json.loads(line) for line in response.content.decode().splitlines()]


@schema.hook("map_case").apply_to(method="POST", path="/v1/chat/completions")
def _ends_with_a_question(_context: Any, case: Any) -> Any:
    """A positive request's last message is a user message with text.

    The request schema says so in its description only: JSON Schema can constrain every item
    of a list, or some item, but not the last one. Negative requests are left as they are.
    """
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return case
    messages = case.body.get("messages") if isinstance(case.body, dict) else None
    if not (isinstance(messages, list) and messages and isinstance(messages[-1], dict)):
        return case
    last = messages[-1]
    last["role"] = "user"
    if isinstance(last.get("content"), list):
        last["content"].append({"type": "text", "text": "How many days of leave?"})
    else:
        last["content"] = f"{last.get('content') or ''} How many days of leave?"
    return case


@schema.hook("map_case").apply_to(method="POST", path="/api/pydantic-agent")
def _readable_files(_context: Any, case: Any) -> Any:
    """A positive request's attached files are readable files of a supported format.

    The schema states the formats in ``files``' description; that a file's bytes are a
    readable document of its format is a rule no schema can state (a PDF must parse). Each
    file of a positive request becomes a short text file; negative requests are left as they
    are.
    """
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return case
    files = case.body.get("files") if isinstance(case.body, dict) else None
    for n, item in enumerate(files if isinstance(files, list) else []):
        if isinstance(item, dict):
            item["fileName"] = f"note-{n}.txt"
            item["mimeType"] = "text/plain"
            item["content"] = base64.b64encode(b"Leave is booked in the HR portal.").decode()
    return case


@pytest.fixture(scope="module")
def base_url(database_url: str, seeded: Any, embedder: Any) -> Iterator[str]:
    """A server in a thread of its own (its own event loop): schemathesis calls it with
    blocking requests from the test's thread."""
    # A run sends about a thousand chat turns and searches as one user, and as many requests
    # without a valid token from one address, in a minute: with the usual limits, 429s would
    # stand in for the answers being checked (and make the stateful runs differ between
    # replays of the same steps).
    settings = settings_for(
        database_url, rate_limit_per_minute=1_000_000, auth_failures_per_minute=1_000_000
    )
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        state["stop"] = (asyncio.get_running_loop(), stop)
        async with serve(settings, embedder=embedder) as running:
            state["url"] = running.base_url
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="fuzzed-agent")
    thread.start()
    try:
        assert ready.wait(60), "the server did not start"
        yield state["url"]
    finally:
        if "stop" in state:
            loop, stop = state["stop"]
            loop.call_soon_threadsafe(stop.set)
        thread.join(60)


def test_document_is_served(base_url: str) -> None:
    assert httpx.get(f"{base_url}/openapi.json").json() == schema.raw_schema


@schema.parametrize()
def test_operations(case: Any, base_url: str) -> None:
    case.call_and_validate(base_url=base_url)


def test_stateful(base_url: str) -> None:
    # A conversation to start from: the workflows begin by listing the caller's.
    turn = httpx.post(
        f"{base_url}/api/pydantic-agent",
        json={"query": "How many days of annual leave?"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert turn.status_code == 200, turn.text

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url}

    Workflow.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
