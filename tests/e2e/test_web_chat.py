"""The web chat page in a real browser: Debian's chromium, a real uvicorn server, real Postgres.

The agent runs ``create_app`` with the embedded Postgres (seeded handbook documents,
reusing the agent tests' helpers) and the offline extractive model, paced by the
test (``web_support.Pacer``) so streaming and Stop are observed, not assumed.
Every browser context is watched: at the end of each test no request may have
left 127.0.0.1 and the page may have logged no errors (CSP violations included).
Screenshots go to ``test-artifacts/`` (gitignored); ``docs/images/chat.png`` is
copied from there by hand when the page changes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Locator, Page, Route, expect

from ragkeeper_agent.web import SecurityHeadersMiddleware
from tests.agent.conftest import SECRET, RunningServer, make_token

from .web_support import GoTrue, NewPage, Pacer, ask, fake_gotrue, serve_asgi

pytestmark = pytest.mark.browser
expect.set_options(timeout=20_000)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
QUESTION = "How many days of paid annual leave do we get?"
LEAVE_URL = "https://docs.example/leave.md"


@pytest.fixture(scope="module")
async def server(start_server: Callable[..., Any]) -> AsyncIterator[RunningServer]:
    async with start_server() as running:
        yield running


async def sign_in(page: Page, base_url: str, sub: str) -> None:
    await page.goto(base_url + "/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Bearer token (JWT)").fill(make_token(sub))
    await page.get_by_role("button", name="Use token").click()
    await expect(page.locator("#chat")).to_be_visible()
    await expect(page.locator("#who")).to_have_text(sub)


async def chat_over_http(server: RunningServer, sub: str, query: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {make_token(sub)}"}
    async with server.client() as c:
        r = await c.post("/api/pydantic-agent", json={"query": query}, headers=headers)
    assert r.status_code == 200, r.text
    final: dict[str, Any] = json.loads(r.text.strip().splitlines()[-1])
    assert final["complete"] is True
    return final


# ------------------------------------------------------------------ chat


async def test_answer_streams_with_citations_and_reloads_after_refresh(
    new_page: NewPage, server: RunningServer, pacer: Pacer
) -> None:
    page, watch = await new_page()
    await sign_in(page, server.base_url, "alice")
    await expect(page.locator("#app-title")).to_have_text("Handbook chat")
    assert await page.title() == "Handbook chat"

    pacer.hold()
    await page.locator("#prompt").fill(QUESTION)
    await page.locator("#prompt").press("Enter")
    await expect(page.locator("#stop")).to_be_visible()
    await expect(page.locator(".message.user .content")).to_have_text(QUESTION)
    answer = page.locator(".message.assistant .content").last
    pacer.allow(1)
    await expect(answer).to_contain_text("Extractive")
    first = (await answer.inner_text()).strip()
    assert await page.locator(".sources").count() == 0, "the answer is still being written"
    pacer.allow(4)
    handle = await answer.element_handle()
    await page.wait_for_function(
        "([el, n]) => el.innerText.trim().length > n", arg=[handle, len(first)]
    )
    second = (await answer.inner_text()).strip()
    assert second.startswith(first) and len(second) > len(first), (first, second)
    assert await page.locator(".sources").count() == 0
    pacer.run_free()

    sources = page.locator(".message.assistant .sources")
    await expect(sources).to_be_visible()
    await expect(answer).to_contain_text("25 days of paid annual leave")
    await expect(page.locator("#stop")).to_be_hidden()
    citation = answer.locator("a.citation").first
    await expect(citation).to_have_attribute("href", LEAVE_URL)
    await expect(citation).to_have_attribute("target", "_blank")
    await expect(citation).to_have_attribute("rel", "noopener noreferrer")
    source_link = sources.get_by_role("link", name="Leave policy").first
    await expect(source_link).to_have_attribute("href", LEAVE_URL)

    # The conversation is listed, titled by the question, and is the open one.
    listed = page.locator("#conversations button")
    await expect(listed).to_have_count(1)
    await expect(listed.first.locator(".title")).to_have_text(QUESTION)
    await expect(listed.first).to_have_attribute("aria-current", "page")
    await expect(page.locator("#conversation-title")).to_have_text(QUESTION)
    assert "#/c/" in page.url

    # Citations open the document (served by the browser itself: nothing leaves the machine).
    async def docs_page(route: Route) -> None:
        watch.intercepted.add(route.request.url)
        await route.fulfill(body="<h1>Leave policy</h1>", content_type="text/html")

    await page.context.route("https://docs.example/**", docs_page)
    async with page.context.expect_page() as opened:
        await citation.click()
    doc = await opened.value
    await doc.wait_for_load_state()
    assert doc.url == LEAVE_URL
    await doc.close()

    # After a refresh: still signed in, the list and the open conversation come back.
    await page.reload()
    await expect(page.locator("#chat")).to_be_visible()
    await expect(page.locator("#conversations button .title")).to_have_text([QUESTION])
    await expect(page.locator(".message.user .content")).to_have_text([QUESTION])
    reloaded = page.locator(".message.assistant .content")
    await expect(reloaded).to_contain_text("25 days of paid annual leave")
    await expect(reloaded.locator("a.citation").first).to_have_attribute("href", LEAVE_URL)
    await expect(
        page.locator(".sources").get_by_role("link", name="Leave policy").first
    ).to_be_visible()


TWO_DOCUMENTS = "Does sick leave count against annual leave, and must laptops use encryption?"
SECURITY_URL = "https://docs.example/security.md"


async def expect_one_entry_per_document(answer: Locator) -> None:
    """One Sources block; one entry per cited document with its passages' numbers under it."""
    content = answer.locator(".content")
    citations = content.locator("a.citation")
    await expect(citations).to_have_count(3)
    cited: dict[str, set[str]] = {}
    for i in range(3):
        link = citations.nth(i)
        cited.setdefault(await link.get_attribute("href") or "", set()).add(await link.inner_text())
    assert set(cited) == {LEAVE_URL, SECURITY_URL} and len(cited[LEAVE_URL]) == 2, cited

    sources = answer.locator(".sources")
    await expect(sources).to_have_count(1)
    entries = sources.locator("li.source")
    await expect(entries).to_have_count(2)
    leave = entries.filter(has=answer.page.get_by_role("link", name="Leave policy", exact=True))
    await expect(leave.locator(".passage-n")).to_have_text(sorted(cited[LEAVE_URL]))
    await expect(leave.locator(".passages")).to_contain_text("Employees receive 25 days")
    await expect(leave.locator(".passages")).to_contain_text("Sick leave does not count")
    security = entries.filter(has=answer.page.get_by_role("link", name="Security handbook"))
    await expect(security.locator(".passage-n")).to_have_text(sorted(cited[SECURITY_URL]))
    # The answer's own "Sources:" list is not shown next to the page's block.
    # (the heading is shown in capitals: compare without case)
    assert (await answer.inner_text()).casefold().count("sources") == 1
    assert "sources" not in (await content.inner_text()).casefold()


async def test_sources_list_each_document_once_with_its_cited_passages(
    new_page: NewPage, server: RunningServer
) -> None:
    final = await chat_over_http(server, "probe", TWO_DOCUMENTS)
    assert "\n\nSources:\n" in final["text"], "the answer text carries its sources for API users"
    page, _ = await new_page()
    await sign_in(page, server.base_url, "sofia")
    await ask(page, TWO_DOCUMENTS)
    await expect_one_entry_per_document(page.locator(".message.assistant").last)
    # Reopened from the stored conversation: the same single list.
    await page.reload()
    await expect(page.locator(".message.assistant")).to_have_count(1)
    await expect_one_entry_per_document(page.locator(".message.assistant").last)


async def test_a_language_models_sources_section_is_left_out_of_the_text(
    new_page: NewPage, server: RunningServer
) -> None:
    page, _ = await new_page()
    await sign_in(page, server.base_url, "lena")
    body = "Leave carries over [1]."
    cases = {
        f"{body}\n\nSources:\n[1] Leave policy — https://docs.example/leave.md": body,
        f"{body}\n\n**Sources:**\n- [1] Leave policy\n- [2] Office guide\n": body,
        f"{body}\n\n## References\n\n1. Leave policy\n": body,
        f"{body}\nSources: [1] Leave policy": body,
        # not a trailing list of sources: kept
        f"{body}\n\nSources:\nthe handbook and the wiki": None,
        "Sources of leave days are described below.\n- [1] Leave policy": None,
    }
    for text, expected in cases.items():
        result = await page.evaluate(
            "async (text) => (await import('/static/js/render.js')).withoutSourcesSection(text)",
            text,
        )
        assert result == (text if expected is None else expected), text


async def test_conversation_list_shows_own_conversations_newest_first(
    new_page: NewPage, server: RunningServer
) -> None:
    older = await chat_over_http(server, "bob", "Where is the office and when does it open?")
    newer = await chat_over_http(server, "bob", "What must laptops use?")
    await chat_over_http(server, "mallory", "Mallory's secret question about leave")
    page, _ = await new_page()
    await sign_in(page, server.base_url, "bob")
    await expect(page.locator("#conversations button .title")).to_have_text(
        [newer["conversation_title"], older["conversation_title"]]
    )
    await page.locator("#conversations button").nth(1).click()
    await expect(page.locator(".message.user .content")).to_have_text(
        ["Where is the office and when does it open?"]
    )
    await expect(page.locator(".message.assistant .content")).to_contain_text("Berlin office")
    assert page.url.endswith(f"#/c/{older['session_id']}")

    # A follow-up goes into the open conversation, which moves to the top.
    await ask(page, "What day is the kitchen cleaned?")
    await expect(page.locator(".message.user")).to_have_count(2)
    await expect(page.locator("#conversations button .title")).to_have_text(
        [older["conversation_title"], newer["conversation_title"]]
    )
    # "New chat" empties the view; the next question starts another conversation.
    await page.get_by_role("button", name="+ New chat").click()
    await expect(page.locator(".message")).to_have_count(0)
    await expect(page.locator("#conversation-title")).to_have_text("New chat")


async def test_stop_button_aborts_the_stream(
    new_page: NewPage, server: RunningServer, pacer: Pacer
) -> None:
    page, _ = await new_page()
    await sign_in(page, server.base_url, "stella")
    pacer.hold()
    await page.locator("#prompt").fill("Who cleans the kitchen on Friday?")
    await page.locator("#prompt").press("Enter")
    answer = page.locator(".message.assistant .content")
    pacer.allow(2)
    await expect(answer).to_contain_text("Extractive")
    await page.get_by_role("button", name="Stop").click()
    await expect(page.locator(".note.stopped")).to_have_text("Stopped. This answer was not saved.")
    await expect(page.locator("#send")).to_be_visible()
    await expect(page.locator("#stop")).to_be_hidden()
    # The server noticed: the model's stream was cancelled mid-answer, nothing was saved.
    await asyncio.wait_for(pacer.aborted.wait(), timeout=30)
    async with server.client() as c:
        convs = await c.get(
            "/api/conversations", headers={"Authorization": f"Bearer {make_token('stella')}"}
        )
    assert convs.json() == []
    await expect(page.locator("#prompt")).to_be_focused()


async def test_sign_out_clears_the_token(new_page: NewPage, server: RunningServer) -> None:
    page, _ = await new_page()
    await sign_in(page, server.base_url, "olga")
    assert await page.evaluate("sessionStorage.getItem('ragkeeper.token')")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#notice-text")).to_have_text("You are signed out.")
    await expect(page.locator("#chat")).to_be_hidden()
    assert await page.evaluate("sessionStorage.length") == 0
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#chat")).to_be_hidden()


# ------------------------------------------------------------------ errors


async def test_errors_show_clear_messages(
    new_page: NewPage, server: RunningServer, pacer: Pacer
) -> None:
    page, _ = await new_page()
    notice = page.locator("#notice-text")

    # 401: a token the server does not accept sends the user back to sign in.
    await page.goto(server.base_url + "/")
    forged = make_token("eve", secret="another-secret-0123456789-abcdefghijklmnop")
    await page.get_by_label("Bearer token (JWT)").fill(forged)
    await page.get_by_role("button", name="Use token").click()
    await expect(notice).to_have_text(
        "You are not signed in, or your sign-in has expired. Please sign in again."
    )
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('ragkeeper.token')") is None

    # A malformed token is refused before anything is sent.
    await page.get_by_label("Bearer token (JWT)").fill("not a token")
    await page.get_by_role("button", name="Use token").click()
    await expect(notice).to_contain_text("That is not a JWT")

    await sign_in(page, server.base_url, "dave")

    # 502: the language model fails before the answer starts; the question is kept.
    pacer.fail_next = True
    await page.locator("#prompt").fill("What is the leave policy?")
    await page.locator("#prompt").press("Enter")
    await expect(notice).to_have_text(
        "The language model failed to answer. Please try again in a moment."
    )
    await expect(page.locator("#prompt")).to_have_value("What is the leave policy?")
    await expect(page.locator(".message")).to_have_count(0)

    # 403: the request is altered in flight to act as another user; the server refuses.
    async def as_someone_else(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        await route.continue_(post_data=json.dumps({**body, "user_id": "someone-else"}))

    await page.route("**/api/pydantic-agent", as_someone_else)
    await page.locator("#prompt").press("Enter")
    await expect(notice).to_have_text(
        "This account is not allowed to do that (user_id does not match the authenticated user)."
    )
    await page.unroute("**/api/pydantic-agent")
    await page.locator("#notice-close").click()
    await expect(page.locator("#notice")).to_be_hidden()


async def test_rate_limit_shows_when_to_retry(
    new_page: NewPage, start_server: Callable[..., Any]
) -> None:
    async with start_server(rate_limit_per_minute=1) as limited:
        page, _ = await new_page()
        await sign_in(page, limited.base_url, "rita")
        await ask(page, "What is the leave policy?")
        await page.locator("#prompt").fill("And sick leave?")
        await page.locator("#prompt").press("Enter")
        notice = page.locator("#notice-text")
        await expect(notice).to_contain_text("Too many requests: please wait")
        text = await notice.inner_text()
        seconds = int(text.split("wait ")[1].split(" second")[0])
        assert 1 <= seconds <= 60
        await expect(page.locator("#prompt")).to_have_value("And sick leave?")
        await expect(page.locator(".message.user")).to_have_count(1)


# ------------------------------------------------------------------ keyboard and layout


async def test_keyboard_enter_sends_shift_enter_adds_a_line_focus_is_visible(
    new_page: NewPage, server: RunningServer
) -> None:
    page, _ = await new_page()
    await sign_in(page, server.base_url, "kim")
    prompt = page.locator("#prompt")
    await expect(prompt).to_be_focused()
    await page.keyboard.type("Laptops must use")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("what encryption?")
    await expect(prompt).to_have_value("Laptops must use\nwhat encryption?")
    await expect(page.locator(".message")).to_have_count(0)
    await page.keyboard.press("Enter")
    await expect(page.locator(".message.user .content")).to_have_text(
        "Laptops must use\nwhat encryption?"
    )
    await expect(prompt).to_have_value("")
    await expect(page.locator(".message.assistant .sources")).to_be_visible()
    await expect(page.locator("#send")).to_be_visible()
    await expect(prompt).to_be_focused()

    await page.keyboard.press("Tab")
    send = page.get_by_role("button", name="Send")
    assert await page.evaluate("document.activeElement.id") == "send"
    assert await send.evaluate("el => el.matches(':focus-visible')")
    outline = await send.evaluate(
        "el => { const s = getComputedStyle(el); return [s.outlineStyle, s.outlineWidth]; }"
    )
    assert outline == ["solid", "3px"]
    # Enter on a focused conversation button opens it.
    await page.locator("#conversations button").first.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(".message.user")).to_have_count(1)


@pytest.mark.parametrize(
    ("name", "viewport"),
    [("narrow", {"width": 375, "height": 740}), ("desktop", {"width": 1280, "height": 800})],
)
async def test_layout_fits_the_viewport_and_is_screenshotted(
    new_page: NewPage, server: RunningServer, name: str, viewport: dict[str, int]
) -> None:
    narrow = viewport["width"] < 700
    page, _ = await new_page(viewport=viewport, device_scale_factor=2 if narrow else 1)
    await sign_in(page, server.base_url, f"screen-{name}")
    await ask(page, "What must laptops use?")
    await ask(page, "How many days of paid annual leave?")
    await expect(page.locator(".message.assistant .sources")).to_have_count(2)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"], "the page scrolls sideways"
    toggle = page.get_by_role("button", name="Chats")
    sidebar = page.locator("#sidebar")
    if narrow:
        await expect(sidebar).to_be_hidden()
        await expect(toggle).to_have_attribute("aria-expanded", "false")
        await toggle.click()
        await expect(sidebar).to_be_visible()
        await expect(page.locator("#conversations button")).to_have_count(1)
        await page.locator("#conversations button").first.click()
        await expect(sidebar).to_be_hidden()
    else:
        await expect(toggle).to_be_hidden()
        await expect(sidebar).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"chat-{name}.png"
    await page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000


# ------------------------------------------------------------------ sign-in variants


async def test_supabase_password_sign_in(
    new_page: NewPage, start_server: Callable[..., Any]
) -> None:
    gotrue = GoTrue(anon_key="anon-public-key", secret=SECRET, users={"ann@example.org": "pw-1"})
    async with (
        serve_asgi(fake_gotrue(gotrue)) as gotrue_url,
        start_server(web_supabase_url=gotrue_url, web_supabase_anon_key=gotrue.anon_key) as agent,
    ):
        async with agent.client() as c:
            config = (await c.get("/web-config.json")).json()
            csp = (await c.get("/")).headers["content-security-policy"]
        assert config["supabase"] == {"url": gotrue_url, "anon_key": "anon-public-key"}
        assert f"connect-src 'self' {gotrue_url};" in csp

        page, _ = await new_page()
        await page.goto(agent.base_url + "/")
        await expect(page.get_by_label("E-mail")).to_be_focused()
        await page.get_by_label("E-mail").fill("ann@example.org")
        await page.get_by_label("Password").fill("wrong")
        await page.get_by_role("button", name="Sign in", exact=True).click()
        await expect(page.locator("#notice-text")).to_have_text("Invalid login credentials")
        await page.get_by_label("Password").fill("pw-1")
        await page.get_by_role("button", name="Sign in", exact=True).click()
        await expect(page.locator("#who")).to_have_text("ann@example.org")
        await ask(page, "What must laptops use?")
        await expect(page.locator(".message.assistant .content")).to_contain_text("encryption")
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert len(gotrue.logouts) == 1 and gotrue.logouts[0].startswith("Bearer ey")
        assert await page.evaluate("sessionStorage.length") == 0


async def test_local_stack_without_auth_opens_the_chat_directly(
    new_page: NewPage, start_server: Callable[..., Any]
) -> None:
    async with start_server(auth_mode="disabled", auth_jwt_secret="") as local:
        page, _ = await new_page()
        await page.goto(local.base_url + "/")
        await expect(page.locator("#chat")).to_be_visible()
        await expect(page.locator("#sign-in")).to_be_hidden()
        await expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
        await ask(page, "When does the office open?")
        await expect(page.locator(".message.assistant .content")).to_contain_text("8:00")


# ------------------------------------------------------------------ security headers


def assert_security_headers(response: httpx.Response, *, docs: bool = False) -> None:
    h = response.headers
    csp = h.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, response.url
    if not docs:
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp, response.url
    assert h.get("x-content-type-options") == "nosniff"
    assert h.get("referrer-policy") == "no-referrer"
    assert h.get("x-frame-options") == "DENY"
    assert "camera=()" in h.get("permissions-policy", "")
    assert "strict-transport-security" not in h, "HSTS only behind https"


async def test_security_headers_on_every_response(server: RunningServer) -> None:
    async with server.client() as c:
        page = await c.get("/")
        assert page.headers["content-type"].startswith("text/html")
        assert "<title>Handbook chat</title>" in page.text and "<script>" not in page.text
        responses = [
            page,
            await c.get("/static/style.css"),
            await c.get("/static/js/main.js"),
            await c.get("/static/vendor/purify.min.js"),
            await c.get("/web-config.json"),
            await c.get("/healthz"),
            await c.get("/metrics"),
            await c.get("/static/missing.js"),
            await c.get("/no-such-page"),
            await c.get("/api/conversations"),
            await c.post("/api/search", content=b"x" * 3_000_000),
            await c.post("/api/search", json={}, headers={"Authorization": "Bearer x.y.z"}),
        ]
        statuses = [r.status_code for r in responses]
        assert statuses == [200] * 7 + [404, 404, 401, 413, 401], statuses
        for response in responses:
            assert_security_headers(response)
        assert responses[2].headers["content-type"].startswith("text/javascript")
        assert_security_headers(await c.get("/docs"), docs=True)
        behind_tls = await c.get("/healthz", headers={"X-Forwarded-Proto": "https"})
        assert behind_tls.headers["strict-transport-security"].startswith("max-age=")
        headers = {"Authorization": f"Bearer {make_token('hedy')}"}
        async with c.stream(
            "POST", "/api/pydantic-agent", json={"query": "leave?"}, headers=headers
        ) as streamed:
            assert streamed.status_code == 200
            assert_security_headers(streamed)
            await streamed.aread()


async def test_unhandled_errors_still_carry_the_headers() -> None:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    app.add_middleware(
        SecurityHeadersMiddleware, policy="default-src 'none'; frame-ancestors 'none'"
    )
    async with serve_asgi(app) as base, httpx.AsyncClient(base_url=base) as c:
        r = await c.get("/boom")
    assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
    assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert r.headers["x-content-type-options"] == "nosniff"
