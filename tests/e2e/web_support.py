"""Helpers for the web chat browser tests: chromium, a paced model, a fake Supabase.

- :func:`launch_chromium` starts Debian's ``chromium`` through Playwright's async
  API (``executable_path``; no browser download) with the background services off
  and every host name except 127.0.0.1 unresolvable, so nothing can leave the machine.
- :class:`Pacer` + :func:`paced_model`: the offline extractive model (real search
  tool, real citations) whose text pieces come out only when the test allows, so
  a test can watch an answer grow and press Stop mid-answer without sleeping.
- :class:`PageWatch` records every request, console error and page error of a
  browser context, for the "no request leaves 127.0.0.1" and "no CSP violation" checks;
  :func:`ask` sends a question the way a user does and waits for the finished answer.
- :func:`fake_gotrue`: Supabase's auth REST API (GoTrue) on 127.0.0.1, issuing
  HS256 tokens the agent accepts — the external identity provider, faked at its boundary.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, expect
from playwright.async_api import Request as PWRequest
from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from ragkeeper_agent.extractive import extractive_model
from tests.support import serve_asgi as serve_asgi  # re-exported for the browser tests

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
LOCAL_HOSTS = frozenset({"127.0.0.1"})


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("Debian's chromium is missing: apt-get install chromium")
    return path


async def launch_chromium(pw: Playwright) -> Browser:
    return await pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


# ------------------------------------------------------------------ paced model


class Pacer:
    """Lets the model's text pieces out when the test says so (free-running by default)."""

    def __init__(self) -> None:
        self._budget: float = math.inf
        self._changed = asyncio.Event()
        self.fail_next = False
        self.aborted = asyncio.Event()

    def hold(self) -> None:
        self._budget = 0
        self.aborted.clear()

    def allow(self, pieces: int = 1) -> None:
        self._budget += pieces
        self._changed.set()

    def run_free(self) -> None:
        self._budget = math.inf
        self._changed.set()

    async def take(self) -> None:
        while self._budget <= 0:
            self._changed.clear()
            await self._changed.wait()
        self._budget -= 1


def paced_model(pacer: Pacer) -> FunctionModel:
    inner = extractive_model()
    assert inner.function is not None and inner.stream_function is not None
    stream_inner = inner.stream_function

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        if pacer.fail_next:
            pacer.fail_next = False
            raise ModelAPIError("paced-test-model", "the provider is down")
        finished = False
        try:
            async for piece in stream_inner(messages, info):
                if isinstance(piece, str):
                    await pacer.take()
                yield piece
            finished = True
        finally:
            if not finished:
                pacer.aborted.set()

    return FunctionModel(inner.function, stream_function=stream, model_name="paced-extractive")


# ------------------------------------------------------------------ page watching


@dataclass
class PageWatch:
    """Everything a browser context asked for or complained about."""

    requests: list[str] = field(default_factory=list)
    intercepted: set[str] = field(default_factory=set)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> None:
        context.on("request", self._on_request)
        context.on("console", self._on_console)
        context.on("weberror", lambda error: self.page_errors.append(str(error.error)))

    def _on_request(self, request: PWRequest) -> None:
        self.requests.append(request.url)

    def _on_console(self, message: ConsoleMessage) -> None:
        # Chromium logs every 4xx/5xx fetch as "Failed to load resource"; those are expected.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.console_errors.append(message.text)

    def outside(self, allowed: frozenset[str] = LOCAL_HOSTS) -> list[str]:
        """Requests that went (or would have gone) to a host other than the allowed ones."""
        out = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob", "about") or url in self.intercepted:
                continue
            if parts.hostname not in allowed:
                out.append(url)
        return out


async def ask(page: Page, question: str) -> None:
    """Type a question, send it with Enter, and wait for the finished answer."""
    answers = page.locator(".message.assistant")
    before = await answers.count()
    await page.locator("#prompt").fill(question)
    await page.locator("#prompt").press("Enter")
    await expect(answers).to_have_count(before + 1)
    await expect(answers.last).not_to_have_class(re.compile(r"\bstreaming\b"))
    await expect(page.locator("#send")).to_be_visible()


NewPage = Callable[..., Awaitable[tuple[Page, PageWatch]]]
"""The ``new_page`` fixture: opens a watched page in a fresh browser context."""


# ------------------------------------------------------------------ local servers


@dataclass
class GoTrue:
    """State of the fake Supabase auth service."""

    anon_key: str
    secret: str
    users: dict[str, str]
    logouts: list[str] = field(default_factory=list)
    refreshes: dict[str, str] = field(default_factory=dict)

    def token_for(self, email: str) -> dict[str, Any]:
        sub = str(uuid.uuid5(uuid.NAMESPACE_URL, email))
        claims = {
            "sub": sub,
            "email": email,
            "aud": "authenticated",
            "role": "authenticated",
            "exp": int(time.time()) + 3600,
        }
        refresh = uuid.uuid4().hex
        self.refreshes[refresh] = email
        return {
            "access_token": jwt.encode(claims, self.secret, algorithm="HS256"),
            "token_type": "bearer",
            "expires_in": 3600,
            "refresh_token": refresh,
            "user": {"id": sub, "email": email},
        }


def fake_gotrue(state: GoTrue) -> FastAPI:
    """``/auth/v1/token`` (password, refresh_token) and ``/auth/v1/logout``, with CORS."""
    app = FastAPI()
    app.add_middleware(
        CORSMiddleware,
        allow_origin_regex=r"http://127\.0\.0\.1:\d+",
        allow_methods=["POST"],
        allow_headers=["apikey", "authorization", "content-type"],
    )

    @app.post("/auth/v1/token")
    async def token(request: Request, grant_type: str) -> JSONResponse:
        if request.headers.get("apikey") != state.anon_key:
            return JSONResponse({"message": "Invalid API key"}, status_code=401)
        body = await request.json()
        if grant_type == "password":
            if state.users.get(body.get("email")) != body.get("password"):
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "Invalid login credentials"},
                    status_code=400,
                )
            return JSONResponse(state.token_for(body["email"]))
        if grant_type == "refresh_token" and body.get("refresh_token") in state.refreshes:
            return JSONResponse(state.token_for(state.refreshes.pop(body["refresh_token"])))
        return JSONResponse({"error": "invalid_grant"}, status_code=400)

    @app.post("/auth/v1/logout")
    async def logout(request: Request) -> Response:
        state.logouts.append(request.headers.get("authorization", ""))
        return Response(status_code=204)

    return app
