"""Fixtures of the browser tests: a seeded agent server factory, chromium, watched pages.

Shared by ``test_web_chat.py`` and ``test_web_oidc.py``; each test module gets its own
database (``database_url`` is module-scoped), seeded with the agent tests' handbook.
The watched-page fixture fails a test whose page sent a request beyond 127.0.0.1,
logged an error (a CSP violation shows up there) or threw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from ragkeeper_knowledge import KnowledgeStore
from ragkeeper_knowledge.embedding import HashingEmbedder
from tests.agent.conftest import seed, serve, settings_for

from .web_support import NewPage, Pacer, PageWatch, launch_chromium, paced_model


@pytest.fixture(scope="module")
def embedder() -> HashingEmbedder:
    return HashingEmbedder(64)


@pytest.fixture(scope="module")
async def seeded(store: KnowledgeStore, embedder: HashingEmbedder) -> KnowledgeStore:
    await seed(store, embedder)
    return store


@pytest.fixture(scope="module")
def pacer() -> Pacer:
    return Pacer()


@pytest.fixture(scope="module")
def start_server(
    database_url: str, seeded: KnowledgeStore, embedder: HashingEmbedder, pacer: Pacer
) -> Callable[..., Any]:
    def start(**overrides: Any) -> Any:
        settings = settings_for(database_url, web_title="Handbook chat", **overrides)
        return serve(settings, embedder=embedder, model=paced_model(pacer))

    return start


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await launch_chromium(pw)
        yield chromium
        await chromium.close()


@pytest.fixture
async def new_page(browser: Browser, pacer: Pacer) -> AsyncIterator[NewPage]:
    """Opens watched pages; afterwards checks nothing left 127.0.0.1 and nothing failed."""
    watches: list[PageWatch] = []
    async with AsyncExitStack() as stack:

        async def open_page(**context_kw: Any) -> tuple[Page, PageWatch]:
            context = await browser.new_context(**context_kw)
            stack.push_async_callback(context.close)
            watch = PageWatch()
            watch.attach(context)
            watches.append(watch)
            return await context.new_page(), watch

        try:
            yield open_page
        finally:
            pacer.run_free()
    for watch in watches:
        assert watch.requests, "the page made no requests at all"
        assert watch.outside() == [], "requests left 127.0.0.1"
        assert watch.console_errors == [], "the page logged errors (CSP violations?)"
        assert watch.page_errors == [], "the page's scripts threw"
