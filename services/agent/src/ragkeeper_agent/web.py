"""The web chat page at ``/`` and the security headers every response carries.

The page is plain static files (``static/``: HTML, CSS, ES modules and two
vendored libraries, marked and DOMPurify), served by the API itself so that
``helm install`` or ``make run`` gives users a chat without another deployment
and without a CDN (the cluster may have no internet). What the page needs to
know at run time (title, whether sign-in is needed, the Supabase project for
e-mail login, the OIDC issuer and public client for SSO) comes from
``GET /web-config.json``, so no inline script is needed and the
Content-Security-Policy can be strict: ``script-src 'self'``, no inline styles,
``connect-src`` limited to this origin (plus the Supabase project and the OIDC
issuer's origin when configured: the page itself reads the issuer's discovery
document and calls its token endpoint, which must therefore share that origin),
no framing.

:class:`SecurityHeadersMiddleware` is pure ASGI and the outermost middleware:
it adds the headers to every response (pages, static files, API errors, 413s,
streamed chats) and turns an unhandled exception into a 500 that still carries
them. FastAPI's interactive ``/docs`` and ``/redoc`` pages load Swagger UI and
ReDoc from a CDN with inline scripts; they alone get a policy that allows that.

Install with :func:`install_web` from the app factory.
"""

from __future__ import annotations

import html
import logging
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragkeeper_knowledge.extraction import SUPPORTED_EXTENSIONS

from .middleware import send_json_error
from .schemas import MAX_FILES
from .settings import Settings, https_origin

logger = logging.getLogger(__name__)

STATIC = files("ragkeeper_agent") / "static"
HSTS = "max-age=63072000; includeSubDomains"
PERMISSIONS_POLICY = (
    "accelerometer=(), autoplay=(), camera=(), display-capture=(), geolocation=(), "
    "gyroscope=(), magnetometer=(), microphone=(), midi=(), payment=(), usb=(), "
    "xr-spatial-tracking=(), browsing-topics=()"
)
# Swagger UI / ReDoc pages FastAPI serves: CDN assets and one inline script each.
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; worker-src blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


class WebConfigError(ValueError):
    """A ``WEB_*`` setting cannot be used (raised when the app is built)."""


def _origin(url: str, setting: str) -> str:
    """The ``scheme://host[:port]`` of an http(s) URL, for connect-src."""
    try:
        return https_origin(url, setting)
    except ValueError as exc:
        raise WebConfigError(str(exc)) from exc


def content_security_policy(settings: Settings) -> str:
    """The page's policy: only this origin, plus the sign-in services that are configured."""
    connect = ["'self'"]
    if settings.web_supabase_url:
        connect.append(_origin(settings.web_supabase_url, "WEB_SUPABASE_URL"))
    if settings.web_oidc_issuer:
        issuer = _origin(settings.web_oidc_issuer, "WEB_OIDC_ISSUER")
        if issuer not in connect:
            connect.append(issuer)
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"font-src 'self'; connect-src {' '.join(connect)}; manifest-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def page_config(settings: Settings) -> dict[str, Any]:
    """What the browser needs to know; nothing here is secret (the anon key and the
    OIDC client id are public, the client has no secret: PKCE protects the code)."""
    supabase: dict[str, str] | None = None
    if settings.web_supabase_url:
        supabase = {
            "url": settings.web_supabase_url.rstrip("/"),
            "anon_key": settings.web_supabase_anon_key,
        }
    oidc: dict[str, str] | None = None
    if settings.web_oidc_issuer:
        oidc = {
            "issuer": settings.web_oidc_issuer,
            "client_id": settings.web_oidc_client_id,
            "scopes": " ".join(settings.web_oidc_scopes.split()),
        }
    return {
        "title": settings.web_title,
        "auth": "disabled" if settings.auth_mode == "disabled" else "token",
        "supabase": supabase,
        "oidc": oidc,
        "attachments": attachment_limits(settings),
    }


def attachment_limits(settings: Settings) -> dict[str, Any] | None:
    """What the page's attach control shows and checks before sending (the API checks again);
    None when ATTACHMENTS_ENABLED is false."""
    if not settings.attachments_enabled:
        return None
    return {
        "max_files": MAX_FILES,
        "max_file_bytes": settings.max_attachment_bytes,
        "max_message_bytes": settings.max_message_attachment_bytes,
        "accept": sorted(f".{ext}" for ext in SUPPORTED_EXTENSIONS),
    }


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response, errors included."""

    def __init__(self, app: ASGIApp, policy: str) -> None:
        self.app = app
        self._common = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"permissions-policy", PERMISSIONS_POLICY.encode()),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
        ]
        self._policy = policy.encode()

    def _headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        policy = DOCS_POLICY.encode() if scope["path"] in DOCS_PATHS else self._policy
        headers = [*self._common, (b"content-security-policy", policy)]
        forwarded = dict(scope.get("headers", [])).get(b"x-forwarded-proto", b"")
        if scope.get("scheme") == "https" or forwarded.split(b",")[0].strip() == b"https":
            # Browsers ignore HSTS over plain http, so trusting the proxy's header is safe.
            headers.append((b"strict-transport-security", HSTS.encode()))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._headers(scope)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {k.lower() for k, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if started:
                raise
            # Starlette's own 500 page is rendered outside every middleware; answer here
            # so the error response carries the headers too.
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            await send_json_error(send_with_headers, 500, "internal server error")


def _router(settings: Settings) -> APIRouter:
    router = APIRouter()
    config = page_config(settings)
    page = (
        STATIC.joinpath("index.html")
        .read_text(encoding="utf-8")
        .replace("{{title}}", html.escape(settings.web_title))
    )
    no_cache = {"Cache-Control": "no-cache"}

    # HEAD too: uptime checks and `curl -I` should not see 405 on the front page.
    @router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=no_cache)

    @router.get("/web-config.json", include_in_schema=False)
    async def web_config() -> JSONResponse:
        return JSONResponse(config, headers=no_cache)

    return router


def install_web(app: FastAPI, settings: Settings) -> None:
    """Serve the page (unless ``WEB_ENABLED=false``) and add the security headers.

    Call it last in the app factory so the headers middleware wraps every other one.
    Static files stay mounted at ``/static`` by the factory.
    """
    policy = content_security_policy(settings)
    if settings.web_enabled:
        app.include_router(_router(settings))
    app.add_middleware(SecurityHeadersMiddleware, policy=policy)
