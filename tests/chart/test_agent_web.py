"""agent.web.* becomes the agent's WEB_* environment, and values the page cannot use are refused.

The title, the Supabase pair and the OIDC client are rendered only when set (the agent's own defaults apply
otherwise). A Supabase URL reaches every browser and the page's Content-Security-Policy, so the
chart refuses one that is not https, and one without its anon key (Supabase answers 401 without
it), at `helm template` time instead of in a crash-looping or half-working pod. That the agent's
`Settings` accept what is rendered is checked in test_settings_contract.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.tools import CI_VALUES, helm_template, named, render

MINIMAL = next(path for path in CI_VALUES if path.stem == "minimal-values")
SUPABASE_URL = "https://abcdefghijkl.supabase.co"
ANON_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.public"
ISSUER = "https://login.example.com/realms/team"
WEB_VARS = (
    "WEB_ENABLED",
    "WEB_TITLE",
    "WEB_SUPABASE_URL",
    "WEB_SUPABASE_ANON_KEY",
    "WEB_OIDC_ISSUER",
    "WEB_OIDC_CLIENT_ID",
    "WEB_OIDC_SCOPES",
)


def _web_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    container = named(objects, "Deployment", "-agent")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if e["name"] in WEB_VARS}


def test_defaults_render_the_page_without_supabase() -> None:
    assert _web_env(render(MINIMAL)) == {"WEB_ENABLED": "true", "WEB_TITLE": "ragkeeper"}


def test_web_env_appears_when_set() -> None:
    sets = [
        "agent.web.enabled=false",
        "agent.web.title=Team docs",
        f"agent.web.supabase.url={SUPABASE_URL}",
        f"agent.web.supabase.anonKey={ANON_KEY}",
    ]
    assert _web_env(render(MINIMAL, sets=sets)) == {
        "WEB_ENABLED": "false",
        "WEB_TITLE": "Team docs",
        "WEB_SUPABASE_URL": SUPABASE_URL,
        "WEB_SUPABASE_ANON_KEY": ANON_KEY,
    }


def test_oidc_env_appears_when_set() -> None:
    sets = [f"agent.web.oidc.issuer={ISSUER}", "agent.web.oidc.clientId=chat"]
    assert _web_env(render(MINIMAL, sets=sets)) == {
        "WEB_ENABLED": "true",
        "WEB_TITLE": "ragkeeper",
        "WEB_OIDC_ISSUER": ISSUER,
        "WEB_OIDC_CLIENT_ID": "chat",
        "WEB_OIDC_SCOPES": "openid profile email",
    }


def test_empty_title_leaves_the_agent_default() -> None:
    assert "WEB_TITLE" not in _web_env(render(MINIMAL, sets=["agent.web.title="]))


def test_scenarios_cover_supabase_sso_and_an_api_only_agent(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    production = _web_env(rendered["production-values"])
    assert production["WEB_SUPABASE_URL"].startswith("https://")
    assert production["WEB_SUPABASE_ANON_KEY"]
    sso = _web_env(rendered["sso-values"])
    assert sso["WEB_OIDC_ISSUER"].startswith("https://") and sso["WEB_OIDC_CLIENT_ID"]
    assert _web_env(rendered["namespaced-values"])["WEB_ENABLED"] == "false"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            [
                "agent.web.supabase.url=http://abcdefghijkl.supabase.co",
                f"agent.web.supabase.anonKey={ANON_KEY}",
            ],
            "at '/agent/web/supabase/url'",  # refused by values.schema.json already
        ),
        (
            [
                "agent.web.supabase.url=https://user:pw@abcdefghijkl.supabase.co",
                f"agent.web.supabase.anonKey={ANON_KEY}",
            ],
            "at '/agent/web/supabase/url'",
        ),
        ([f"agent.web.supabase.url={SUPABASE_URL}"], "agent.web.supabase.anonKey is required"),
        ([f"agent.web.supabase.anonKey={ANON_KEY}"], "agent.web.supabase.url must be an https://"),
        (["agent.web.title=" + "t" * 81], "at '/agent/web/title'"),
        (
            ["agent.web.oidc.issuer=http://login.example.com", "agent.web.oidc.clientId=chat"],
            "at '/agent/web/oidc/issuer'",
        ),
        ([f"agent.web.oidc.issuer={ISSUER}"], "agent.web.oidc.clientId is required"),
        (["agent.web.oidc.clientId=chat"], "agent.web.oidc.issuer must be an https://"),
        (
            [
                f"agent.web.oidc.issuer={ISSUER}",
                "agent.web.oidc.clientId=chat",
                "agent.web.oidc.scopes=profile email",
            ],
            "at '/agent/web/oidc/scopes'",
        ),
    ],
    ids=[
        "http-url",
        "credentials-in-url",
        "url-without-key",
        "key-without-url",
        "long-title",
        "http-issuer",
        "issuer-without-client",
        "client-without-issuer",
        "scopes-without-openid",
    ],
)
def test_unusable_web_values_are_refused(sets: list[str], message: str) -> None:
    proc = helm_template(MINIMAL, sets=sets)
    assert proc.returncode != 0, f"{sets} was accepted"
    assert message in proc.stderr, proc.stderr
