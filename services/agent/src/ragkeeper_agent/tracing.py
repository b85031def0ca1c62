"""Optional OpenTelemetry trace export over OTLP/HTTP (Langfuse, Logfire, any collector).

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set,
so a default deployment starts no exporter thread and sends nothing anywhere. When on, the
app gets its *own* ``TracerProvider`` (never the process-global one: tests run several apps
in one process, and a global provider can be set only once), started in the lifespan and
shut down — flushing the batch of pending spans — when the app stops.

Two kinds of spans reach the collector:

* one ``SERVER`` span per HTTP request from :class:`TracingMiddleware`, a small pure-ASGI
  middleware (the FastAPI instrumentation package adds a span per streamed chunk and a
  handful of extra dependencies; this needs neither). It continues an incoming
  ``traceparent`` and is named after the matched route template, as the metrics are;
* Pydantic AI's own agent-run, model-request and tool spans, switched on per app by wrapping
  the model in ``InstrumentedModel`` with this provider (no ``Agent.instrument_all``, which
  would be process-global). They nest under the request span through the OTel context.

Once a chat route knows who is asking and in which conversation, :func:`identify` puts the
user id and the conversation's session id on the request span and on every span started
after it in that request (the agent run, model requests, tools), under both namings:

* ``langfuse.user.id`` / ``langfuse.session.id``: what Langfuse groups its Users and
  Sessions views by;
* ``user.id`` / ``session.id``: the OpenTelemetry semantic conventions, which Langfuse also
  reads and which Logfire (a generic OTel backend, no vendor attributes of its own for
  these) and other collectors query.

The headers (``OTEL_EXPORTER_OTLP_HEADERS``, e.g. Langfuse's ``Authorization=Basic ...``) are
a secret: they are parsed here without the stock parser, which logs malformed entries
verbatim, and never logged.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from urllib.parse import unquote, urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic_ai.models import Model
from pydantic_ai.models.instrumented import InstrumentationSettings, InstrumentedModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .settings import Settings

logger = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
TRACER_NAME = "ragkeeper_agent"
# Probes and scrapes every few seconds would drown the traces people look for.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

USER_ID_ATTRIBUTES = ("langfuse.user.id", "user.id")
SESSION_ID_ATTRIBUTES = ("langfuse.session.id", "session.id")

# The identity attributes of the request being served (a task-local copy per request).
_identity: ContextVar[dict[str, str] | None] = ContextVar("ragkeeper_trace_identity", default=None)


def identify(user_id: str, session_id: str | None = None) -> None:
    """Label the current request span, and the spans started after it, with who and where.

    A no-op while tracing is off (the current span is then the non-recording one).
    """
    attributes = dict.fromkeys(USER_ID_ATTRIBUTES, user_id)
    if session_id:
        attributes.update(dict.fromkeys(SESSION_ID_ATTRIBUTES, session_id))
    _identity.set(attributes)
    trace.get_current_span().set_attributes(attributes)


class IdentityProcessor(SpanProcessor):
    """Copies :func:`identify`'s attributes onto every span started in that request."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = _identity.get()
        if attributes:
            span.set_attributes(attributes)


class TracingConfigError(ValueError):
    """The OTLP settings cannot be used (the message never contains a header value)."""


def traces_endpoint(settings: Settings) -> str | None:
    """The full OTLP/HTTP traces URL, or None when export is off.

    As the OTel spec says: the signal-specific variable is used as-is, the generic one is a
    base URL that gets ``/v1/traces`` appended.
    """
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    base = settings.otel_exporter_otlp_endpoint
    if not base:
        return None
    return base.rstrip("/") + TRACES_PATH


def parse_headers(raw: str) -> dict[str, str]:
    """``key1=value1,key2=value2`` (values may be URL-encoded) into a header dict."""
    headers: dict[str, str] = {}
    for position, item in enumerate(raw.split(","), start=1):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = unquote(name).strip().lower()
        if not sep or not name:
            raise TracingConfigError(
                f"OTEL_EXPORTER_OTLP_HEADERS entry {position} is not of the form name=value"
            )
        headers[name] = unquote(value).strip()
    return headers


class Tracing:
    """The app's tracer provider: built by :meth:`start`, flushed by :meth:`shutdown`."""

    def __init__(self, settings: Settings, endpoint: str, *, version: str) -> None:
        scheme = urlsplit(endpoint).scheme
        if scheme not in ("http", "https"):
            raise TracingConfigError(f"OTLP endpoint must be an http(s) URL, got scheme {scheme!r}")
        self.endpoint = endpoint
        self._headers = parse_headers(settings.otel_exporter_otlp_headers.get_secret_value())
        self._service_name = settings.otel_service_name
        self._version = version
        self._include_content = settings.otel_include_content
        self.provider: TracerProvider | None = None

    def start(self) -> None:
        resource = Resource.create(
            {SERVICE_NAME: self._service_name, SERVICE_VERSION: self._version}
        )
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(IdentityProcessor())
        exporter = OTLPSpanExporter(endpoint=self.endpoint, headers=self._headers)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        self.provider = provider
        logger.info(
            "exporting traces to %s as service %s (%d header(s) configured)",
            self.endpoint,
            self._service_name,
            len(self._headers),
        )

    async def shutdown(self) -> None:
        """Flush pending spans and stop the export thread (blocking I/O, so off the loop)."""
        provider, self.provider = self.provider, None
        if provider is not None:
            await asyncio.to_thread(provider.shutdown)

    def tracer(self) -> trace.Tracer | None:
        return self.provider.get_tracer(TRACER_NAME, self._version) if self.provider else None

    def instrument(self, model: Model) -> Model:
        """Wrap ``model`` so Pydantic AI records agent, model and tool spans with our provider."""
        if self.provider is None:
            return model
        return InstrumentedModel(
            model,
            InstrumentationSettings(
                tracer_provider=self.provider, include_content=self._include_content
            ),
        )


def tracing_from_settings(settings: Settings, *, version: str) -> Tracing | None:
    """A :class:`Tracing` when an OTLP endpoint is configured, else None (export off)."""
    endpoint = traces_endpoint(settings)
    return Tracing(settings, endpoint, version=version) if endpoint else None


def _carrier(scope: Scope) -> dict[str, str]:
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}


class TracingMiddleware:
    """One ``SERVER`` span per HTTP request, current while the app (and the agent) runs."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = self.tracing.tracer() if scope["type"] == "http" else None
        if tracer is None or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        status = 500

        with tracer.start_as_current_span(
            method,
            context=propagate.extract(_carrier(scope)),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as span:

            async def send_traced(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    for key, value in message.get("headers", []):
                        if key == b"x-request-id":
                            span.set_attribute("http.request_id", value.decode("latin-1"))
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            finally:
                template = getattr(scope.get("route"), "path", None)
                if template:
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
