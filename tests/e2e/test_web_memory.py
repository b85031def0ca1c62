"""The page's "Your memories" panel in a real browser (docs/agent.md, "Memory"): a memory
saved with "remember that …" is listed, recalled in a new chat, forgotten with its button, never
shown to another user; with MEMORY_ENABLED=false the panel is not shown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.agent.conftest import auth

from .test_web_chat import sign_in
from .web_support import NewPage, ask

pytestmark = pytest.mark.browser
expect.set_options(timeout=20_000)

FACT = "my team is Falcon"


async def open_panel(page: Page) -> None:
    await expect(page.locator("#memories-panel")).to_be_visible()
    await page.get_by_text("Your memories", exact=True).click()


async def test_the_panel_lists_recalls_and_forgets_a_memory(
    new_page: NewPage, start_server: Callable[..., Any]
) -> None:
    async with start_server() as server:
        page, _ = await new_page()
        await sign_in(page, server.base_url, "panel-alice")
        await open_panel(page)
        await expect(page.locator("#no-memories")).to_be_visible()

        await ask(page, f"Remember that {FACT}")
        await expect(page.locator(".message.assistant .content").last).to_contain_text(
            f"Remembered: {FACT}"
        )
        await expect(page.locator("#memories li .memory-text")).to_have_text([FACT])

        await page.get_by_role("button", name="+ New chat").click()
        await ask(page, "What is my team?")
        await expect(page.locator(".message.assistant .content").last).to_contain_text(FACT)

        other, _ = await new_page()
        await sign_in(other, server.base_url, "panel-bob")
        await open_panel(other)
        await expect(other.locator("#no-memories")).to_be_visible()
        await expect(other.locator("#memories li")).to_have_count(0)

        await page.get_by_role("button", name=f"Forget: {FACT}").click()
        await expect(page.locator("#memories li")).to_have_count(0)
        await expect(page.locator("#no-memories")).to_be_visible()
        async with server.client() as c:
            assert (await c.get("/api/memories", headers=auth("panel-alice"))).json() == []


async def test_the_panel_is_hidden_when_memory_is_off(
    new_page: NewPage, start_server: Callable[..., Any]
) -> None:
    async with start_server(memory_enabled=False) as server:
        page, _ = await new_page()
        await sign_in(page, server.base_url, "panel-off")
        await expect(page.locator("#memories-panel")).to_be_hidden()
