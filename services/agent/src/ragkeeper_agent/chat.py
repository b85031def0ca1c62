"""One chat turn: run the agent, stream its text, measure it, and hand back the result.

Both chat routes (the NDJSON one and the OpenAI-compatible one) drive the agent
through :meth:`ChatRunner.stream`, which yields :class:`TextDelta` pieces as the
model produces them and ends with one :class:`TurnResult`. Persistence stays with
the caller, because only the NDJSON route owns a stored conversation.

Graceful shutdown: when the server starts draining (SIGTERM), running turns get
``SHUTDOWN_GRACE_SECONDS`` to finish; a turn still running then is cancelled and
ends with :class:`TurnInterrupted`, which the routes turn into a final error line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from pydantic_ai import Agent, AgentRunResultEvent, UsageLimits
from pydantic_ai.exceptions import (
    ModelAPIError,
    RunCancelled,
    UnexpectedModelBehavior,
    UsageLimitExceeded,
)
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequestPart,
    ModelResponsePart,
    PartDeltaEvent,
    PartStartEvent,
    RetryPromptPart,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolReturnPart,
    UserContent,
)
from pydantic_ai.usage import RunUsage

from .agent import Deps, Passage
from .errors import AgentServiceError, RequestTooLarge, Unavailable, UpstreamError, as_outage
from .metrics import AGENT_RUN_DURATION, TOKENS

logger = logging.getLogger(__name__)


class TurnInterrupted(Exception):
    """The server shut down before the turn finished."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class TurnResult:
    output: str
    new_messages: list[ModelMessage]
    usage: RunUsage
    sources: list[Passage]
    model: str


class ChatRunner:
    def __init__(
        self,
        agent: Agent[Deps, str],
        *,
        model_name: str,
        max_requests: int,
        draining: asyncio.Event,
        grace_seconds: float,
    ) -> None:
        self._agent = agent
        self.model_name = model_name
        self._limits = UsageLimits(request_limit=max_requests)
        self._draining = draining
        self._grace = grace_seconds

    async def _cancel_after_drain(self, flag: asyncio.Event, cancel: Callable[[], None]) -> None:
        await self._draining.wait()
        await asyncio.sleep(self._grace)
        flag.set()
        cancel()

    async def stream(
        self,
        prompt: str | Sequence[UserContent],
        *,
        history: Sequence[ModelMessage],
        deps: Deps,
    ) -> AsyncGenerator[TextDelta | TurnResult]:
        """Run one turn; yields text as it arrives, then exactly one ``TurnResult``."""
        started = time.perf_counter()
        outcome = "error"
        interrupted = asyncio.Event()
        try:
            async with self._agent.run_stream_events(
                prompt, message_history=list(history), deps=deps, usage_limits=self._limits
            ) as events:
                watcher = asyncio.create_task(self._cancel_after_drain(interrupted, events.cancel))
                try:
                    async for event in events:
                        if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                            if event.part.content:
                                yield TextDelta(event.part.content)
                        elif isinstance(event, PartDeltaEvent) and isinstance(
                            event.delta, TextPartDelta
                        ):
                            if event.delta.content_delta:
                                yield TextDelta(event.delta.content_delta)
                        elif isinstance(event, AgentRunResultEvent):
                            result = event.result
                            usage = result.usage
                            TOKENS.labels(self.model_name, "input").inc(usage.input_tokens)
                            TOKENS.labels(self.model_name, "output").inc(usage.output_tokens)
                            outcome = "ok"
                            yield TurnResult(
                                output=result.output,
                                new_messages=result.new_messages(),
                                usage=usage,
                                sources=sorted(deps.sources.values(), key=lambda p: p.n),
                                model=self.model_name,
                            )
                except RunCancelled as exc:
                    if interrupted.is_set():
                        outcome = "interrupted"
                        raise TurnInterrupted("the server is shutting down") from exc
                    raise
                finally:
                    watcher.cancel()
        finally:
            AGENT_RUN_DURATION.labels(self.model_name, outcome).observe(
                time.perf_counter() - started
            )


def _text_chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, Sequence):  # a prompt's parts: text counts, binaries do not
        return sum(len(item) for item in content if isinstance(item, str))
    return 0


def _part_chars(part: ModelRequestPart | ModelResponsePart) -> int:
    if isinstance(part, ToolCallPart):
        return len(part.args_as_json_str())
    if isinstance(part, ToolReturnPart):
        return len(part.model_response_str())
    if isinstance(part, RetryPromptPart):
        return len(part.model_response())
    return _text_chars(getattr(part, "content", None))


def prompt_chars(prompt: str | Sequence[UserContent], history: Sequence[ModelMessage]) -> int:
    """Characters of text one turn sends the model: the prompt and every history message
    (system prompts, earlier questions and answers, tool calls and their results)."""
    return _text_chars(prompt) + sum(
        _part_chars(part) for message in history for part in message.parts
    )


def check_prompt_size(
    prompt: str | Sequence[UserContent],
    history: Sequence[ModelMessage],
    *,
    limit: int,
    extra_chars: int = 0,
) -> None:
    """Refuse (413) a turn whose whole prompt exceeds ``MAX_PROMPT_CHARS``; ``extra_chars``
    is the text the instructions add (the conversation's attached files)."""
    size = prompt_chars(prompt, history) + extra_chars
    if size > limit:
        raise RequestTooLarge(
            f"the prompt is {size} characters with its history, attached files and system "
            "messages, "
            f"over the limit of {limit} (MAX_PROMPT_CHARS); shorten the history or start "
            "a new conversation"
        )


def describe_failure(exc: BaseException) -> AgentServiceError:
    """Map a failure of a turn to the HTTP error it deserves (by type, never by message).

    A dependency's outage (``errors.as_outage``: the database, the embedding API, the model's
    provider unreachable or failing with a 5xx) is 503 with ``Retry-After``; the model failing
    otherwise (4xx, malformed output, usage limits) is 502; anything else is 500.
    """
    if isinstance(exc, AgentServiceError):
        return exc
    if isinstance(exc, TurnInterrupted):
        return Unavailable("the server is shutting down; retry on another replica")
    outage = as_outage(exc)
    if outage is not None:
        return outage
    if isinstance(exc, ModelAPIError | UnexpectedModelBehavior | UsageLimitExceeded):
        return UpstreamError(f"the language model failed: {type(exc).__name__}")
    return AgentServiceError(f"internal error: {type(exc).__name__}")


async def start_turn(
    stream: AsyncGenerator[TextDelta | TurnResult],
) -> tuple[TextDelta | TurnResult, AsyncGenerator[TextDelta | TurnResult]]:
    """Wait for the first piece so failures before any output become real HTTP statuses."""
    try:
        first = await anext(stream)
    except Exception as exc:
        error = describe_failure(exc)
        if error.status_code >= 500:
            logger.warning("turn failed before streaming: %r", exc, exc_info=exc)
        raise error from exc
    return first, stream
