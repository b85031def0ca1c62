""" "Sign in with SSO" in a real browser: authorization code + PKCE against a local OIDC provider.

The provider (``oidc_fake``) runs on 127.0.0.1 and checks the PKCE verifier, the
client id and the redirect URI as a real one does; the agent verifies its RS256
tokens through ``AUTH_JWKS_URL`` like any production provider's. Nothing is
stubbed in the page: discovery, the redirects, the token request (CORS included)
and the chat all happen in chromium. The ``new_page`` fixture also fails a test
whose page reached beyond 127.0.0.1 or logged an error (a CSP violation would).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.agent.conftest import RunningServer

from .oidc_fake import OidcProvider, fake_oidc, s256
from .web_support import NewPage, ask, serve_asgi

pytestmark = pytest.mark.browser
expect.set_options(timeout=20_000)

CLIENT_ID = "ragkeeper-web"
AUDIENCE = "ragkeeper-api"


@pytest.fixture(scope="module")
async def sso(
    start_server: Callable[..., Any],
) -> AsyncIterator[tuple[OidcProvider, RunningServer]]:
    provider = OidcProvider(client_id=CLIENT_ID, audience=AUDIENCE)
    async with serve_asgi(fake_oidc(provider)) as issuer:
        provider.issuer = issuer
        async with start_server(
            auth_jwt_secret="",
            auth_jwks_url=f"{issuer}/jwks",
            auth_audience=AUDIENCE,
            auth_issuer=issuer,
            web_oidc_issuer=issuer,
            web_oidc_client_id=CLIENT_ID,
        ) as agent:
            yield provider, agent


@pytest.fixture
def provider(sso: tuple[OidcProvider, RunningServer]) -> OidcProvider:
    """The provider, answering normally and with empty records at the start of each test."""
    provider = sso[0]
    provider.deny, provider.answer_state, provider.token_seconds = False, None, 3600
    provider.authorizations.clear()
    provider.token_requests.clear()
    provider.revoked.clear()
    provider.issued.clear()
    return provider


@pytest.fixture
def agent(sso: tuple[OidcProvider, RunningServer]) -> RunningServer:
    return sso[1]


async def sso_sign_in(page: Page, agent: RunningServer) -> None:
    await page.goto(agent.base_url + "/")
    button = page.get_by_role("button", name="Sign in with SSO")
    await expect(button).to_be_focused()
    await button.click()


async def storage(page: Page) -> dict[str, str]:
    stored: dict[str, str] = await page.evaluate("({...sessionStorage})")
    return stored


async def expect_refused(page: Page, agent: RunningServer, message: str) -> None:
    await expect(page.locator("#notice-text")).to_contain_text(message)
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#chat")).to_be_hidden()
    assert page.url == agent.base_url + "/", "the provider's answer stays in the URL"
    assert await storage(page) == {}, "a refused sign-in left part of a session behind"


async def test_config_and_csp_name_the_issuer(agent: RunningServer, provider: OidcProvider) -> None:
    async with agent.client() as c:
        config = (await c.get("/web-config.json")).json()
        csp = (await c.get("/")).headers["content-security-policy"]
    assert config["oidc"] == {
        "issuer": provider.issuer,
        "client_id": CLIENT_ID,
        "scopes": "openid profile email",
    }
    assert f"connect-src 'self' {provider.issuer};" in csp
    assert "unsafe-inline" not in csp


async def test_sso_sign_in_chats_survives_reload_and_signs_out(
    new_page: NewPage, agent: RunningServer, provider: OidcProvider
) -> None:
    page, _ = await new_page()
    await page.goto(agent.base_url + "/#/c/none-yet")
    await page.get_by_role("button", name="Sign in with SSO").click()
    await expect(page.locator("#chat")).to_be_visible()
    # The ID token's profile names the user; the code is gone from the URL, the fragment is back.
    await expect(page.locator("#who")).to_have_text(provider.email)
    assert page.url == agent.base_url + "/#/c/none-yet"

    # The authorization request and the token request, as the provider saw them (PKCE: S256).
    [authorization] = provider.authorizations
    assert authorization["redirect_uri"] == agent.base_url + "/"
    assert authorization["scope"] == "openid profile email"
    assert authorization["code_challenge_method"] == "S256"
    assert authorization["nonce"] and authorization["state"]
    [exchange] = provider.token_requests
    verifier = exchange["code_verifier"]
    assert 43 <= len(verifier) <= 128
    assert s256(verifier) == authorization["code_challenge"]
    assert exchange["grant_type"] == "authorization_code"
    assert (exchange["client_id"], exchange["redirect_uri"]) == (CLIENT_ID, agent.base_url + "/")

    await page.get_by_role("button", name="+ New chat").click()
    await ask(page, "How many days of paid annual leave do we get?")
    await expect(page.locator(".message.assistant .content")).to_contain_text(
        "25 days of paid annual leave"
    )
    # The API accepted the provider's RS256 token and filed the chat under its subject.
    token = (await storage(page))["ragkeeper.token"]
    async with agent.client() as c:
        mine = await c.get("/api/conversations", headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 200 and len(mine.json()) == 1

    await page.reload()
    await expect(page.locator("#chat")).to_be_visible()
    await expect(page.locator("#who")).to_have_text(provider.email)
    await expect(page.locator("#conversations button")).to_have_count(1)

    refresh = (await storage(page))["ragkeeper.refresh"]
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#notice-text")).to_have_text("You are signed out.")
    assert await storage(page) == {}
    assert provider.revoked == [refresh]
    await page.reload()
    await expect(page.get_by_role("button", name="Sign in with SSO")).to_be_visible()
    await expect(page.locator("#chat")).to_be_hidden()
    assert len(provider.token_requests) == 1, "signing out must not sign in again"


async def test_provider_refusal_is_shown_and_signs_nobody_in(
    new_page: NewPage, agent: RunningServer, provider: OidcProvider
) -> None:
    provider.deny = True
    page, _ = await new_page()
    await sso_sign_in(page, agent)
    await expect_refused(
        page, agent, "The sign-in provider refused the sign-in (access_denied: The user said no)."
    )
    assert provider.token_requests == []


async def test_tampered_state_is_refused(
    new_page: NewPage, agent: RunningServer, provider: OidcProvider
) -> None:
    provider.answer_state = "forged-state"
    page, _ = await new_page()
    await sso_sign_in(page, agent)
    await expect_refused(page, agent, "state mismatch")
    # An answer nobody asked for in this tab (login CSRF) is refused the same way.
    await page.goto(agent.base_url + "/?code=stolen&state=anything")
    await expect_refused(page, agent, "state mismatch")
    assert provider.token_requests == [], "the code was never traded"


async def test_token_near_expiry_is_refreshed_with_the_refresh_token(
    new_page: NewPage, agent: RunningServer, provider: OidcProvider
) -> None:
    provider.token_seconds = 20  # inside the page's 30 s refresh margin from the start
    page, _ = await new_page()
    await sso_sign_in(page, agent)
    await expect(page.locator("#chat")).to_be_visible()
    await page.get_by_role("button", name="+ New chat").click()
    await ask(page, "What must laptops use?")
    await expect(page.locator(".message.assistant .content")).to_contain_text("encryption")
    # Each API call found the token within 30 s of expiry and refreshed it first.
    refreshes = [r for r in provider.token_requests if r["grant_type"] == "refresh_token"]
    assert refreshes and all(r["client_id"] == CLIENT_ID for r in refreshes)
    assert refreshes[0]["refresh_token"] == provider.issued[0]["refresh_token"]
    assert [r["refresh_token"] for r in refreshes[1:]] == [
        i["refresh_token"] for i in provider.issued[1:-1]
    ], "each refresh used the newest (rotated) refresh token"
    now = await storage(page)
    assert now["ragkeeper.token"] == provider.issued[-1]["access_token"]
    assert now["ragkeeper.refresh"] in provider.refresh_tokens
