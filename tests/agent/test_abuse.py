"""Abuse controls: failed authentications and the unauthenticated route that does work
(``/readyz``) limited per client IP, the client resolved through TRUSTED_PROXIES only, one
database check however many probes arrive at once, and the audit log (``ragkeeper.audit``, JSON) of 401, 403, 429 and SQL-tool
refusals without tokens, prompts or SQL text.

The server runs on 127.0.0.1; with ``trusted_proxies=["127.0.0.1"]`` each test names its own
client in ``X-Forwarded-For``, so failures counted by other tests (same database) do not count.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

from ragkeeper_agent.readiness import Readiness
from ragkeeper_knowledge import create_pool

from .conftest import auth, make_token

SEARCH = {"query": "annual leave", "k": 1}


def _ip() -> str:
    n = uuid.uuid4().int
    return f"198.51.{n % 250}.{(n >> 8) % 250 + 1}"


def _events(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


async def test_failed_auths_block_the_ip_then_429_even_with_a_valid_token(
    server_factory: Callable[..., Any], audit_lines: list[str]
) -> None:
    ip, other = _ip(), _ip()
    bad = make_token("abuser", secret="w" * 48)
    async with (
        server_factory(auth_failures_per_minute=3, trusted_proxies=["127.0.0.1"]) as srv,
        srv.client() as c,
    ):
        from_ip = {"X-Forwarded-For": ip}
        codes = [
            (
                await c.post(
                    "/api/search",
                    json=SEARCH,
                    headers={**from_ip, "Authorization": f"Bearer {bad}"},
                )
            ).status_code
            for _ in range(4)
        ]
        assert codes == [401, 401, 401, 429]
        valid = await c.post("/api/search", json=SEARCH, headers={**from_ip, **auth("abuse-ok")})
        assert valid.status_code == 429
        assert 1 <= int(valid.headers["Retry-After"]) <= 60
        # Another client is unaffected.
        ok = await c.post(
            "/api/search", json=SEARCH, headers={"X-Forwarded-For": other, **auth("abuse-ok")}
        )
        assert ok.status_code == 200
    events = _events(audit_lines)
    assert [e["event"] for e in events if e["client_ip"] == ip] == [
        "auth_failed",
        "auth_failed",
        "auth_failed",
        "rate_limited",
        "rate_limited",
    ]
    for event in events:
        assert event["request_id"] and event["request_id"] != "-"
        assert event["route"] == "/api/search"
    assert bad not in "\n".join(audit_lines)


async def test_forwarded_header_only_from_trusted_proxies(
    server_factory: Callable[..., Any], audit_lines: list[str]
) -> None:
    spoofed = _ip()
    headers = {"X-Forwarded-For": spoofed, "Authorization": "Bearer not-a-jwt"}
    async with server_factory(trusted_proxies=["10.0.0.0/8"]) as srv, srv.client() as c:
        assert (await c.post("/api/search", json=SEARCH, headers=headers)).status_code == 401
    async with server_factory(trusted_proxies=["127.0.0.0/8"]) as srv, srv.client() as c:
        headers["X-Forwarded-For"] = f"{spoofed}, 127.0.0.2"  # the right-most untrusted one
        assert (await c.post("/api/search", json=SEARCH, headers=headers)).status_code == 401
    assert [e["client_ip"] for e in _events(audit_lines)] == ["127.0.0.1", spoofed]
    assert "not-a-jwt" not in "\n".join(audit_lines)


async def test_forbidden_and_user_rate_limit_are_audited(
    server_factory: Callable[..., Any], audit_lines: list[str]
) -> None:
    user = f"abuse-{uuid.uuid4().hex[:8]}"
    headers = auth(user)
    async with server_factory(rate_limit_per_minute=1) as srv, srv.client() as c:
        body = {"query": "annual leave?", "user_id": "someone-else"}
        r = await c.post("/api/pydantic-agent", json=body, headers=headers)
        assert r.status_code == 403
        assert (await c.post("/api/search", json=SEARCH, headers=headers)).status_code == 200
        assert (await c.post("/api/search", json=SEARCH, headers=headers)).status_code == 429
    events = _events(audit_lines)
    assert [(e["event"], e["user_id"], e["client_ip"]) for e in events] == [
        ("forbidden", user, "127.0.0.1"),
        ("rate_limited", user, "127.0.0.1"),
    ]
    text = "\n".join(audit_lines)
    assert headers["Authorization"].split()[1] not in text
    assert "annual leave" not in text


async def test_sql_refusal_is_audited_without_the_sql_or_prompt(
    server_factory: Callable[..., Any], audit_lines: list[str]
) -> None:
    sql = "DROP TABLE prompt_marker_tbl"
    prompt = "please drop the secret-prompt-marker table"

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("query_tabular_rows", {"sql": sql})])
        return ModelResponse(parts=[TextPart("done")])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        if len(messages) == 1:
            yield {0: DeltaToolCall(name="query_tabular_rows", json_args=json.dumps({"sql": sql}))}
        else:
            yield "done"

    user = f"abuse-sql-{uuid.uuid4().hex[:8]}"
    async with (
        server_factory(model=FunctionModel(model, stream_function=stream)) as srv,
        srv.client() as c,
    ):
        r = await c.post("/api/pydantic-agent", json={"query": prompt}, headers=auth(user))
        assert r.status_code == 200
        request_id = r.headers["X-Request-ID"]
    [event] = _events(audit_lines)
    assert event["event"] == "sql_refused"
    assert event["user_id"] == user and event["client_ip"] == "127.0.0.1"
    assert event["request_id"] == request_id
    assert event["reason"].startswith("SQLRejected")
    assert event["sql"]["chars"] == len(sql)
    text = "\n".join(audit_lines)
    assert "prompt_marker" not in text and "secret-prompt-marker" not in text


async def test_readiness_probes_are_limited_per_client_ip(
    server_factory: Callable[..., Any], audit_lines: list[str]
) -> None:
    ip, other = _ip(), _ip()
    async with (
        server_factory(public_requests_per_minute=3, trusted_proxies=["127.0.0.1"]) as srv,
        srv.client() as c,
    ):
        codes = [
            (await c.get("/readyz", headers={"X-Forwarded-For": ip})).status_code for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        refused = await c.get("/readyz", headers={"X-Forwarded-For": ip})
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
        assert (await c.get("/readyz", headers={"X-Forwarded-For": other})).status_code == 200
        # Routes that do no work are not counted: the page and liveness stay open.
        assert (await c.get("/healthz", headers={"X-Forwarded-For": ip})).status_code == 200
        assert (await c.get("/", headers={"X-Forwarded-For": ip})).status_code == 200
        metrics = (await c.get("/metrics")).text
    assert 'ragkeeper_agent_rate_limit_rejections_total{route="/readyz"} 2.0' in metrics
    events = [(e["event"], e["client_ip"], e["route"]) for e in _events(audit_lines)]
    assert events == [("rate_limited", ip, "/readyz")] * 2


class _CountingPool:
    """A real pool that counts its acquisitions."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.acquired = 0

    def acquire(self) -> Any:
        self.acquired += 1
        return self.pool.acquire()


async def test_concurrent_probes_share_one_database_check(database_url: str) -> None:
    pool = await create_pool(database_url, max_size=2)
    counting = _CountingPool(pool)
    try:
        readiness = Readiness(counting)  # type: ignore[arg-type]
        answers = await asyncio.gather(*(readiness.answer() for _ in range(50)))
        assert {a.status_code for a in answers} == {200}
        assert counting.acquired == 1
        # The next probe checks again: no answer outlives the check it came from.
        assert (await readiness.answer()).status_code == 200
        assert counting.acquired == 2
    finally:
        await pool.close()
