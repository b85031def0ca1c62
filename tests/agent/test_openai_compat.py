"""The official ``openai`` client as a real client of ``/v1/chat/completions``."""

from __future__ import annotations

import openai
import pytest

from .conftest import RunningServer, make_token


def client(server: RunningServer, sub: str = "olive") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=make_token(sub))


async def test_non_streaming_completion_with_usage(server: RunningServer) -> None:
    async with client(server) as c:
        completion = await c.chat.completions.create(
            model="ragkeeper",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "When must lost devices be reported?"},
            ],
        )
    assert completion.object == "chat.completion"
    assert completion.model == "ragkeeper"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert "within one hour" in (choice.message.content or "")
    assert "Security handbook" in (choice.message.content or "")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


async def test_streaming_completion_with_usage_chunk(server: RunningServer) -> None:
    async with client(server) as c:
        stream = await c.chat.completions.create(
            model="anything-goes",
            messages=[
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi! Ask me about the handbook."},
                {"role": "user", "content": "Which office opens at 8:00?"},
            ],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    content_chunks = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(content_chunks) > 3, "the answer is streamed in pieces"
    assert "Berlin office opens at 8:00" in text
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert {ch.model for ch in chunks} == {"anything-goes"}


async def test_models_listing_and_auth(server: RunningServer) -> None:
    async with client(server) as c:
        models = await c.models.list()
        assert [m.id async for m in models] == ["ragkeeper"]
    bad = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="not-a-token")
    async with bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.chat.completions.create(
                model="ragkeeper", messages=[{"role": "user", "content": "hi"}]
            )


async def test_invalid_conversation_is_422(server: RunningServer) -> None:
    async with client(server) as c:
        with pytest.raises(openai.UnprocessableEntityError):
            await c.chat.completions.create(
                model="ragkeeper", messages=[{"role": "assistant", "content": "no user turn"}]
            )
