"""``create_app(settings)``: the FastAPI application, its lifespan and error mapping.

The lifespan opens everything the app needs once (pool, HTTP clients, embedder,
agent — see ``services.py``) and closes it on shutdown. Our own exceptions carry
their HTTP status (``errors.py``); this module is the one place that turns them
into responses, and a dependency's outage (``errors.as_outage``: database
unreachable, embedding API down...) into 503 with ``Retry-After`` on every route.
Tests and the local-stack launcher call ``create_app`` with an explicit settings
object and, optionally, an embedder or model of their own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.resources import as_file, files
from wsgiref.simple_server import WSGIServer

import httpx
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import start_http_server
from pydantic_ai.models import Model
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ragkeeper_knowledge.embedding.base import Embedder

from ._version import __version__
from .audit import STATUS_EVENTS, audit
from .errors import HANDLED_TYPES, AgentServiceError, as_outage
from .llm import build_model
from .mcp_server import MCPEndpoint, MCPRoute
from .metrics import REGISTRY, instrument_pool
from .middleware import BodySizeLimitMiddleware, ObservabilityMiddleware
from .openapi import install as install_openapi
from .routes import chat, conversations, memories, openai_compat, ops, search
from .services import open_services
from .settings import Settings
from .tracing import Tracing, TracingMiddleware, tracing_from_settings
from .web import install_web

logger = logging.getLogger(__name__)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    # Handler registered for this type only (B101 does not apply).
    assert isinstance(exc, AgentServiceError)  # nosec B101
    if exc.status_code >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    event = STATUS_EVENTS.get(exc.status_code)
    if event is not None:
        # The message names what was wrong ("token expired"), never the token itself.
        audit(event, str(exc), status=exc.status_code)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code, headers=exc.headers)


async def _outage_error(request: Request, exc: Exception) -> JSONResponse:
    """A dependency's failure that reached a route: 503 if it is an outage; anything else
    (a bug, or a database error about the query itself) goes on to the 500 handler."""
    error = as_outage(exc)
    if error is None:
        raise exc
    logger.warning("%s %s: %s", request.method, request.url.path, error)
    return JSONResponse(
        {"detail": str(error)}, status_code=error.status_code, headers=error.headers
    )


def create_app(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    model: Model | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the app. ``embedder``/``model``/``transport`` override the configured ones."""
    draining = asyncio.Event()
    tracing = tracing_from_settings(settings, version=__version__)
    app = FastAPI(
        title="ragkeeper agent",
        version=__version__,
        lifespan=_lifespan(
            settings, draining, tracing, embedder=embedder, model=model, transport=transport
        ),
        description="Retrieval-augmented agent over the ragkeeper knowledge store.",
    )
    app.state.draining = draining
    app.state.tracing = tracing
    app.state.mcp = MCPEndpoint(settings) if settings.mcp_enabled else None
    app.add_exception_handler(AgentServiceError, _service_error)
    for outage in HANDLED_TYPES:
        app.add_exception_handler(outage, _outage_error)
    _add_routes(app, settings)
    install_openapi(app, settings)
    _add_middleware(app, settings, tracing)
    install_web(app, settings)
    if settings.trusted_proxies:
        # Outermost: every middleware and the audit log see the resolved client address.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app


def _lifespan(
    settings: Settings,
    draining: asyncio.Event,
    tracing: Tracing | None,
    *,
    embedder: Embedder | None,
    model: Model | None,
    transport: httpx.AsyncBaseTransport | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Startup opens the services (tracing first, so the model is instrumented); shutdown
    drains and closes them, then flushes the traces and stops the METRICS_PORT server."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.auth_mode == "disabled":
            logger.warning(
                "AUTH_MODE=disabled: every request is trusted; use this only for a local stack"
            )
        run_model = model
        if tracing is not None:
            tracing.start()
            run_model = tracing.instrument(model or build_model(settings))
        metrics_server = _start_metrics_server(settings)
        try:
            services = await open_services(
                settings, draining=draining, embedder=embedder, model=run_model, transport=transport
            )
            instrument_pool(services.pool)
            app.state.services = services
            try:
                async with _mcp_running(app):
                    yield
            finally:
                draining.set()
                await services.aclose()
                logger.info("agent stopped")
        finally:
            if tracing is not None:
                await tracing.shutdown()
            if metrics_server is not None:
                await asyncio.to_thread(_stop_metrics_server, metrics_server)

    return lifespan


@asynccontextmanager
async def _mcp_running(app: FastAPI) -> AsyncIterator[None]:
    """The MCP endpoint's session manager (MCP_ENABLED), for as long as the app serves."""
    endpoint: MCPEndpoint | None = app.state.mcp
    if endpoint is None:
        yield
        return
    async with endpoint.running():
        yield


MetricsServer = tuple[WSGIServer, threading.Thread]


def _start_metrics_server(settings: Settings) -> MetricsServer | None:
    """``/metrics`` on ``METRICS_PORT`` (HOST's address), in a thread, when the port is set."""
    if not settings.metrics_port:
        return None
    server = start_http_server(settings.metrics_port, addr=settings.host, registry=REGISTRY)
    logger.info("serving /metrics on port %d", settings.metrics_port)
    return server


def _stop_metrics_server(metrics_server: MetricsServer) -> None:
    server, thread = metrics_server
    server.shutdown()
    server.server_close()
    thread.join()


def _add_routes(app: FastAPI, settings: Settings) -> None:
    for router in (
        ops.router,
        chat.router,
        openai_compat.router,
        conversations.router,
        memories.router,
        search.router,
    ):
        app.include_router(router)
    if not settings.metrics_port:
        app.include_router(ops.metrics_router)
    if app.state.mcp is not None:
        app.router.routes.append(MCPRoute(app.state.mcp))
    with as_file(files("ragkeeper_agent") / "static") as static_dir:
        app.mount("/static", StaticFiles(directory=static_dir), name="static")


def _add_middleware(app: FastAPI, settings: Settings, tracing: Tracing | None) -> None:
    """CORS (when configured) innermost, then the body limit, metrics/logs and tracing.

    ``install_web`` adds the security headers after these, as the outermost middleware.
    """
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        path_limits={"/api/pydantic-agent": settings.chat_body_bytes},
    )
    app.add_middleware(ObservabilityMiddleware)
    if tracing is not None:
        app.add_middleware(TracingMiddleware, tracing=tracing)


def request_shutdown(app: FastAPI) -> None:
    """Start draining: readiness turns 503 and running turns get the grace period to finish."""
    draining: asyncio.Event = app.state.draining
    draining.set()
