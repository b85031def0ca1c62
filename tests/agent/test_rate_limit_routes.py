"""Which routes the per-user rate limit guards, and what a limited route answers.

The limit is a dependency (``ragkeeper_agent.deps.RateLimit``) that a limited route's
input passes through. The first test walks every route of the app, so a new route that
neither takes the dependency nor is listed in ``EXEMPT`` (with the reason) fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from ragkeeper_agent import create_app
from ragkeeper_agent.deps import RateLimit

from .conftest import auth, settings_for

LIMITED = {"/api/pydantic-agent", "/v1/chat/completions", "/api/search"}
EXEMPT = {
    "/healthz": "liveness probe",
    "/readyz": "readiness probe (limited per client IP: PUBLIC_REQUESTS_PER_MINUTE)",
    "/metrics": "Prometheus scrapes",
    "/": "the web page",
    "/web-config.json": "the web page's configuration",
    "/static": "the web page's files",
    "/openapi.json": "FastAPI's API description",
    "/docs": "FastAPI's Swagger UI",
    "/docs/oauth2-redirect": "FastAPI's Swagger UI",
    "/redoc": "FastAPI's ReDoc page",
    "/v1/models": "a constant answer (still authenticated)",
    "/api/conversations": "the caller's own history, one indexed read",
    "/api/conversations/{session_id}/messages": "the caller's own history, one indexed read",
    "/api/memories": "the caller's own memories, one indexed read",
    "/api/memories/{memory_id}": "the caller's own memory, one indexed delete",
    "/mcp": "limited per message inside the endpoint (mcp_server.LIMITED_METHODS: tool calls "
    "and resource reads and listings count, the handshake does not); tests/agent/test_mcp.py",
}

SEARCH = {"query": "leave"}
BODIES: dict[str, dict[str, Any]] = {
    "/api/search": SEARCH,
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "annual leave?"}]},
    "/api/pydantic-agent": {"query": "annual leave?"},
}


def _rate_limited(dependant: Dependant) -> bool:
    return isinstance(dependant.call, RateLimit) or any(
        _rate_limited(sub) for sub in dependant.dependencies
    )


def route_limits(app: FastAPI) -> dict[str, bool]:
    """Every path the app serves (included routers and mounts too) -> rate limited?"""
    limits: dict[str, bool] = {}
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        limited = dependant is not None and _rate_limited(dependant)
        path = str(route.path)
        # Two routes on one path (other methods) are limited only if both are.
        limits[path] = limits.get(path, True) and limited
    return limits


def test_every_route_is_rate_limited_or_exempt() -> None:
    limits = route_limits(create_app(settings_for("postgresql://unused/db")))
    unlimited = {path for path, limited in limits.items() if not limited}
    assert unlimited - EXEMPT.keys() == set(), "rate-limit these routes or list them in EXEMPT"
    assert EXEMPT.keys() - limits.keys() == set(), "EXEMPT lists routes the app does not serve"
    assert {path for path, limited in limits.items() if limited} == LIMITED


def test_route_walk_sees_a_route_that_forgets_the_limit() -> None:
    app = create_app(settings_for("postgresql://unused/db"))

    async def forgetful() -> dict[str, str]:
        return {}

    app.add_api_route("/api/forgetful", forgetful, methods=["POST"])
    assert route_limits(app)["/api/forgetful"] is False


async def _codes(c: httpx.AsyncClient, path: str, user: str, n: int) -> list[int]:
    return [
        (await c.post(path, json=BODIES[path], headers=auth(user))).status_code for _ in range(n)
    ]


async def test_limited_routes_answer_429_and_others_do_not(
    server_factory: Callable[..., Any],
) -> None:
    async with server_factory(rate_limit_per_minute=2) as srv, srv.client() as c:
        for path in sorted(LIMITED):
            user = f"rl-{path}"
            assert await _codes(c, path, user, 2) == [200, 200], path
            r = await c.post(path, json=BODIES[path], headers=auth(user))
            assert r.status_code == 429, path
            retry_after = int(r.headers["retry-after"])
            assert 1 <= retry_after <= 60
            assert r.json() == {"detail": f"rate limit exceeded; retry in {retry_after} s"}
        # One window per user, whichever limited route the requests went to.
        assert await _codes(c, "/api/search", "rl-shared", 2) == [200, 200]
        assert await _codes(c, "/api/pydantic-agent", "rl-shared", 1) == [429]
        assert await _codes(c, "/api/search", "rl-other", 1) == [200]
        # The full window does not close the routes outside the limit.
        full = auth("rl-shared")
        for path in ("/api/conversations", "/v1/models", "/healthz", "/readyz", "/metrics"):
            for _ in range(3):
                assert (await c.get(path, headers=full)).status_code == 200, path
        for path in ("/", "/web-config.json", "/static/style.css"):
            assert (await c.get(path)).status_code == 200, path
        metrics = (await c.get("/metrics")).text
    for path in LIMITED:
        assert f'ragkeeper_agent_rate_limit_rejections_total{{route="{path}"}}' in metrics


async def test_refused_requests_do_not_use_up_the_window(
    server_factory: Callable[..., Any], admin_conn: asyncpg.Connection
) -> None:
    user = "rl-refused"
    headers = auth(user)
    refused = [
        ("/api/pydantic-agent", {"query": "hi", "user_id": "mallory"}, 403),
        ("/api/pydantic-agent", {"query": "x" * 101}, 422),
        ("/api/pydantic-agent", {"session_id": "x"}, 422),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 101}]}, 422),
        ("/v1/chat/completions", {"messages": []}, 422),
        ("/api/search", {"k": 5}, 422),
    ]
    async with (
        server_factory(rate_limit_per_minute=2, max_query_chars=100) as srv,
        srv.client() as c,
    ):
        for path, body, status in refused * 2:
            assert (await c.post(path, json=body, headers=headers)).status_code == status, body
        assert await _codes(c, "/api/search", user, 3) == [200, 200, 429]
    admitted = await admin_conn.fetchval("SELECT count(*) FROM requests WHERE user_id = $1", user)
    assert admitted == 2


async def test_auth_disabled_limits_the_user_named_in_the_body(
    server_factory: Callable[..., Any],
) -> None:
    chat = "/api/pydantic-agent"
    completions = "/v1/chat/completions"
    async with (
        server_factory(auth_mode="disabled", auth_jwt_secret="", rate_limit_per_minute=1) as srv,
        srv.client() as c,
    ):
        for user in ("rl-body-a", "rl-body-b"):
            body = {**BODIES[chat], "user_id": user}
            codes = [(await c.post(chat, json=body)).status_code for _ in range(2)]
            assert codes == [200, 429], user
        body = {**BODIES[completions], "user": "rl-body-c"}
        codes = [(await c.post(completions, json=body)).status_code for _ in range(2)]
        assert codes == [200, 429]
