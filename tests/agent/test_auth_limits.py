"""Authentication (HS256 and JWKS with rotation), the shared rate limit, CORS and settings."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from ragkeeper_agent import Settings
from ragkeeper_agent.errors import RateLimited
from ragkeeper_agent.ratelimit import RateLimiter
from ragkeeper_knowledge import KnowledgeStore

from .conftest import SECRET, RunningServer, auth, make_token

SEARCH = {"query": "leave"}


async def test_missing_or_bad_tokens_are_401(server: RunningServer) -> None:
    bad = {
        "none": {},
        "not_bearer": {"Authorization": f"Basic {make_token('a')}"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "wrong_secret": {"Authorization": f"Bearer {make_token('a', secret='x' * 40)}"},
        "expired": {"Authorization": f"Bearer {make_token('a', exp=int(time.time()) - 3600)}"},
        "wrong_audience": {"Authorization": f"Bearer {make_token('a', aud='anon')}"},
        "alg_none": {
            "Authorization": "Bearer "
            + jwt.encode({"sub": "a", "aud": "authenticated", "exp": 2**31}, None, algorithm="none")
        },
    }
    async with server.client() as c:
        for name, headers in bad.items():
            r = await c.post("/api/search", json=SEARCH, headers=headers)
            assert r.status_code == 401, name
            assert r.headers["www-authenticate"] == "Bearer"
            r = await c.post("/v1/chat/completions", json={}, headers=headers)
            assert r.status_code == 401, name


async def test_body_user_id_must_match_token_subject(server: RunningServer) -> None:
    async with server.client() as c:
        r = await c.post(
            "/api/pydantic-agent", json={"query": "hi", "user_id": "mallory"}, headers=auth("bob")
        )
    assert r.status_code == 403


async def test_rate_limit_is_shared_between_replicas(
    pool: asyncpg.Pool, seeded: KnowledgeStore
) -> None:
    replicas = [RateLimiter(pool, per_minute=5), RateLimiter(pool, per_minute=5)]
    results = await asyncio.gather(
        *(replicas[i % 2].admit("burst-user", "/x") for i in range(12)), return_exceptions=True
    )
    admitted = [r for r in results if r is None]
    rejected = [r for r in results if isinstance(r, RateLimited)]
    assert (len(admitted), len(rejected)) == (5, 7)
    assert all(1 <= r.retry_after <= 60 for r in rejected)
    await replicas[0].admit("other-user", "/x")  # per user: someone else still gets in


async def test_rate_limit_answers_429_with_retry_after(
    server_factory: Callable[..., Any],
) -> None:
    async with server_factory(rate_limit_per_minute=2) as srv, srv.client() as c:
        codes = [
            (await c.post("/api/search", json=SEARCH, headers=auth("limited"))).status_code
            for _ in range(3)
        ]
        r = await c.post("/api/search", json=SEARCH, headers=auth("limited"))
        assert codes == [200, 200, 429]
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
        assert (await c.post("/api/search", json=SEARCH, headers=auth("other"))).status_code == 200
        metrics = (await c.get("/metrics")).text
    assert 'ragkeeper_agent_rate_limit_rejections_total{route="/api/search"}' in metrics


def _jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "alg": "ES256", "use": "sig"}


async def test_jwks_keys_are_cached_and_rotated(server_factory: Callable[..., Any]) -> None:
    keys = {"k1": ec.generate_private_key(ec.SECP256R1())}
    fetches: list[str] = []

    def identity_provider(request: httpx.Request) -> httpx.Response:
        fetches.append(str(request.url))
        return httpx.Response(200, json={"keys": [_jwk(k, kid) for kid, k in keys.items()]})

    def token(kid: str, sub: str) -> str:
        claims = {"sub": sub, "aud": "authenticated", "exp": int(time.time()) + 60}
        return jwt.encode(claims, keys[kid], algorithm="ES256", headers={"kid": kid})

    async with (
        server_factory(
            auth_jwt_secret="",
            auth_jwks_url="https://idp.example/auth/v1/.well-known/jwks.json",
            transport=httpx.MockTransport(identity_provider),
        ) as srv,
        srv.client() as c,
    ):
        for _ in range(3):
            r = await c.post(
                "/api/search", json=SEARCH, headers={"Authorization": f"Bearer {token('k1', 'u')}"}
            )
            assert r.status_code == 200
        assert len(fetches) == 1, "keys are cached"
        # HS256 tokens are not accepted when only a JWKS is configured.
        r = await c.post("/api/search", json=SEARCH, headers=auth("u"))
        assert r.status_code == 401
        # The identity provider rotates to a new key: an unknown kid triggers one refetch.
        keys["k2"] = ec.generate_private_key(ec.SECP256R1())
        r = await c.post(
            "/api/search", json=SEARCH, headers={"Authorization": f"Bearer {token('k2', 'u')}"}
        )
        assert r.status_code == 200
        assert len(fetches) == 2
        # A forged kid cannot make the service hammer the identity provider.
        forged = jwt.encode(
            {"sub": "u", "aud": "authenticated", "exp": int(time.time()) + 60},
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"kid": "forged"},
        )
        for _ in range(3):
            r = await c.post(
                "/api/search", json=SEARCH, headers={"Authorization": f"Bearer {forged}"}
            )
            assert r.status_code == 401
        assert len(fetches) == 2


async def test_auth_disabled_trusts_body_user(server_factory: Callable[..., Any]) -> None:
    async with server_factory(auth_mode="disabled", auth_jwt_secret="") as srv, srv.client() as c:
        r = await c.post("/api/search", json=SEARCH)
        assert r.status_code == 200
        r = await c.get("/api/conversations", params={"user_id": "someone"})
        assert r.status_code == 200


async def test_cors_allows_only_configured_origins(server_factory: Callable[..., Any]) -> None:
    async with server_factory(cors_origins=["https://chat.example"]) as srv, srv.client() as c:
        preflight = {"Access-Control-Request-Method": "POST"}
        ok = await c.options("/api/search", headers={"Origin": "https://chat.example", **preflight})
        bad = await c.options(
            "/api/search", headers={"Origin": "https://evil.example", **preflight}
        )
    assert ok.headers["access-control-allow-origin"] == "https://chat.example"
    assert "access-control-allow-origin" not in bad.headers


@pytest.mark.parametrize(
    "overrides",
    [
        {"auth_jwt_secret": ""},
        {"auth_jwt_secret": "changeme"},
        {"auth_jwt_secret": "short-secret"},
        {"cors_origins": "*", "cors_allow_credentials": True},
        {"llm_api_key": "your-api-key"},
    ],
)
def test_settings_refuse_unsafe_values(overrides: dict[str, Any]) -> None:
    values = {"database_url": "postgresql://x/y", "auth_jwt_secret": SECRET, **overrides}
    with pytest.raises(ValidationError):
        Settings(**values)


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("AUTH_MODE", "disabled")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "7")
    s = Settings()  # type: ignore[call-arg]
    assert s.auth_mode == "disabled"
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.rate_limit_per_minute == 7
    assert (s.host, s.port) == ("127.0.0.1", 8000)
