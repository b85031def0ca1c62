"""WEB_OIDC_* settings: refused when unusable, and what the page and its CSP are given.

Pure functions of :class:`Settings` (``page_config``, ``content_security_policy``); the
browser flow itself is tested in ``tests/e2e/test_web_oidc.py``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from ragkeeper_agent import Settings
from ragkeeper_agent.web import content_security_policy, page_config

from .conftest import SECRET

ISSUER = "https://login.example.com/realms/staff"


def settings(**overrides: Any) -> Settings:
    return Settings(database_url="postgresql://x/y", auth_jwt_secret=SECRET, **overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"web_oidc_issuer": ISSUER}, "WEB_OIDC_ISSUER and WEB_OIDC_CLIENT_ID go together"),
        ({"web_oidc_client_id": "web"}, "WEB_OIDC_ISSUER and WEB_OIDC_CLIENT_ID go together"),
        (
            {"web_oidc_issuer": "http://login.example.com", "web_oidc_client_id": "web"},
            "WEB_OIDC_ISSUER must be an https:// URL (http:// only for localhost)",
        ),
        (
            {"web_oidc_issuer": "login.example.com", "web_oidc_client_id": "web"},
            "WEB_OIDC_ISSUER must be an https:// URL",
        ),
        (
            {"web_oidc_issuer": "https://u:p@login.example.com", "web_oidc_client_id": "web"},
            "WEB_OIDC_ISSUER must be a plain https://host URL",
        ),
        (
            {"web_oidc_issuer": f"{ISSUER}?tenant=1", "web_oidc_client_id": "web"},
            "WEB_OIDC_ISSUER must have no query or fragment",
        ),
        (
            {"web_oidc_issuer": ISSUER, "web_oidc_client_id": "web", "web_oidc_scopes": "email"},
            "WEB_OIDC_SCOPES must include 'openid'",
        ),
    ],
)
def test_oidc_settings_refuse_unusable_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        settings(**overrides)


def test_oidc_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("AUTH_JWKS_URL", f"{ISSUER}/protocol/openid-connect/certs")
    monkeypatch.setenv("WEB_OIDC_ISSUER", "http://127.0.0.1:5556/dex")
    monkeypatch.setenv("WEB_OIDC_CLIENT_ID", "ragkeeper-web")
    s = Settings()  # type: ignore[call-arg]
    assert (s.web_oidc_issuer, s.web_oidc_client_id) == (
        "http://127.0.0.1:5556/dex",
        "ragkeeper-web",
    )
    assert s.web_oidc_scopes == "openid profile email"


def test_page_config_has_no_oidc_unless_configured() -> None:
    s = settings()
    assert page_config(s)["oidc"] is None
    assert "connect-src 'self';" in content_security_policy(s)


def test_page_config_and_csp_name_the_issuer() -> None:
    s = settings(
        web_oidc_issuer=ISSUER,
        web_oidc_client_id="ragkeeper-web",
        web_oidc_scopes="openid  email offline_access",
    )
    assert page_config(s)["oidc"] == {
        "issuer": ISSUER,
        "client_id": "ragkeeper-web",
        "scopes": "openid email offline_access",
    }
    csp = content_security_policy(s)
    # The origin only: discovery and the token endpoint live under it, nothing else is allowed.
    assert "connect-src 'self' https://login.example.com;" in csp
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp


def test_csp_lists_a_shared_origin_once() -> None:
    s = settings(
        web_supabase_url="https://login.example.com",
        web_oidc_issuer="https://login.example.com/auth/v1",
        web_oidc_client_id="ragkeeper-web",
    )
    assert "connect-src 'self' https://login.example.com;" in content_security_policy(s)
