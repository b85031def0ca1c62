"""OpenTelemetry export: spans reach a real OTLP/HTTP receiver, and nothing is set up by default.

The receiver is a plain ``http.server`` on 127.0.0.1 in a thread, decoding each POST to
``/v1/traces`` with the collector's protobuf message, as Langfuse or an OTel collector would.
The app's lifespan shutdown flushes the batch processor, so every span is there once the
server context has exited: no waiting on time.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ragkeeper_agent import create_app
from ragkeeper_agent.agent import SEARCH_TOOL
from ragkeeper_agent.tracing import TracingConfigError, TracingMiddleware, parse_headers
from tests.agent.conftest import auth, settings_for

AUTH_VALUE = "Basic cGstbGYtdGVzdDpzay1sZi1zZWNyZXQ="
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@dataclass
class Received:
    paths: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)

    def spans(self) -> list[tuple[str | None, Span]]:
        """(service.name, span) for every span received."""
        out = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    None,
                )
                for scope_spans in resource_spans.scope_spans:
                    out.extend((service, span) for span in scope_spans.spans)
        return out


def attrs(span: Span) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        values[a.key] = getattr(a.value, kind) if kind else None
    return values


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    received = Received()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            message = ExportTraceServiceRequest()
            message.ParseFromString(body)
            with lock:
                received.paths.append(self.path)
                received.authorizations.append(self.headers.get("Authorization"))
                received.requests.append(message)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", received
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


async def test_chat_turn_exports_request_agent_and_tool_spans(
    server_factory: Callable[..., Any],
    receiver: tuple[str, Received],
    caplog: pytest.LogCaptureFixture,
) -> None:
    base_url, received = receiver
    caplog.set_level(logging.DEBUG)
    async with (
        server_factory(
            otel_exporter_otlp_endpoint=base_url + "/",
            otel_exporter_otlp_headers=f"Authorization={AUTH_VALUE.replace(' ', '%20')}",
            otel_service_name="ragkeeper-agent-test",
            otel_include_content=True,
        ) as server,
        server.client() as c,
    ):
        r = await c.post(
            "/api/pydantic-agent",
            json={"query": "How many days of paid annual leave?", "user_id": "alice"},
            headers={
                **auth("alice"),
                "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
            },
        )
        assert r.status_code == 200
        assert "25 days" in r.text
        assert (await c.get("/healthz")).status_code == 200
    # Lifespan shutdown has flushed the batch: everything is here now.
    assert received.paths and set(received.paths) == {"/v1/traces"}
    assert set(received.authorizations) == {AUTH_VALUE}
    assert AUTH_VALUE not in caplog.text and "cGstbGYtdGVzdDpzay1" not in caplog.text

    spans = received.spans()
    assert {service for service, _ in spans} == {"ragkeeper-agent-test"}
    by_name = {span.name: span for _, span in spans}
    http_span = by_name["POST /api/pydantic-agent"]
    assert http_span.kind == Span.SPAN_KIND_SERVER
    assert http_span.trace_id.hex() == TRACE_ID  # continued the caller's trace
    http_attrs = attrs(http_span)
    assert http_attrs["http.route"] == "/api/pydantic-agent"
    assert http_attrs["http.response.status_code"] == 200
    assert http_attrs["http.request_id"] == r.headers["x-request-id"]
    assert not any("healthz" in name for name in by_name)  # probes are not traced

    run = by_name["invoke_agent ragkeeper"]
    assert run.parent_span_id == http_span.span_id  # the agent run nests under the request
    tools = [s for _, s in spans if attrs(s).get("gen_ai.tool.name") == SEARCH_TOOL]
    assert tools, sorted(by_name)
    assert all(t.trace_id == run.trace_id == http_span.trace_id for t in tools)
    assert "annual leave" in str(attrs(tools[0]).get("gen_ai.tool.call.arguments", ""))


def _all_text(received: Received) -> str:
    """Every string attribute value of every exported span, joined."""
    return "\n".join(str(value) for _, span in received.spans() for value in attrs(span).values())


@pytest.mark.parametrize("include_content", [None, True])
async def test_prompts_and_passages_stay_out_of_spans_unless_enabled(
    server_factory: Callable[..., Any],
    receiver: tuple[str, Received],
    include_content: bool | None,
) -> None:
    base_url, received = receiver
    content = {} if include_content is None else {"otel_include_content": include_content}
    async with (
        server_factory(otel_exporter_otlp_endpoint=base_url, **content) as server,
        server.client() as c,
    ):
        r = await c.post(
            "/api/pydantic-agent",
            json={"query": "How is the Berlin kitchen kept clean?", "user_id": "alice"},
            headers=auth("alice"),
        )
        assert r.status_code == 200 and "every Friday" in r.text
    names = {span.name for _, span in received.spans()}
    assert "invoke_agent ragkeeper" in names and f"execute_tool {SEARCH_TOOL}" in names
    text = _all_text(received)
    for secret in ("Berlin kitchen", "cleaned every Friday"):  # the question, the passage
        assert (secret in text) is bool(include_content), secret


def test_no_endpoint_means_no_exporter(database_url: str) -> None:
    app = create_app(settings_for(database_url))
    assert app.state.tracing is None
    assert TracingMiddleware not in [m.cls for m in app.user_middleware]


def test_traces_endpoint_wins_and_bad_settings_are_refused(database_url: str) -> None:
    app = create_app(
        settings_for(
            database_url,
            otel_exporter_otlp_endpoint="http://collector:4318",
            otel_exporter_otlp_traces_endpoint="https://cloud.langfuse.com/api/public/otel/v1/traces",
        )
    )
    assert app.state.tracing.endpoint == "https://cloud.langfuse.com/api/public/otel/v1/traces"
    assert TracingMiddleware in [m.cls for m in app.user_middleware]
    assert parse_headers("a=1, B=x%3Dy,,") == {"a": "1", "b": "x=y"}
    with pytest.raises(TracingConfigError) as bad:
        parse_headers("Authorization Basic s3cr3t")
    assert "s3cr3t" not in str(bad.value)
    with pytest.raises(TracingConfigError):
        create_app(settings_for(database_url, otel_exporter_otlp_endpoint="collector:4318"))


async def _traced_turn(
    server_factory: Callable[..., Any], base_url: str, session_id: str | None = None
) -> str:
    """One chat turn by alice with export on; returns the turn's session id."""
    body = {"query": "How many days of paid annual leave?", "user_id": "alice"}
    if session_id:
        body["session_id"] = session_id
    async with (
        server_factory(otel_exporter_otlp_endpoint=base_url) as server,
        server.client() as c,
    ):
        r = await c.post("/api/pydantic-agent", json=body, headers=auth("alice"))
        assert r.status_code == 200
    return str(json.loads(r.text.strip().splitlines()[-1])["session_id"])


def _span_attributes(received: Received) -> list[dict[str, Any]]:
    """The attributes of each exported span; the request and the agent run are among them."""
    spans = [span for _, span in received.spans()]
    names = {span.name for span in spans}
    assert {"POST /api/pydantic-agent", "invoke_agent ragkeeper"} <= names, names
    assert any(attrs(span).get("gen_ai.tool.name") == SEARCH_TOOL for span in spans), names
    return [attrs(span) for span in spans]


async def test_langfuse_groups_traces_by_user_and_session(
    server_factory: Callable[..., Any], receiver: tuple[str, Received]
) -> None:
    base_url, received = receiver
    session = await _traced_turn(server_factory, base_url)
    for values in _span_attributes(received):
        assert (values["langfuse.user.id"], values["langfuse.session.id"]) == ("alice", session)


async def test_logfire_and_otel_collectors_get_the_semantic_convention_names(
    server_factory: Callable[..., Any], receiver: tuple[str, Received]
) -> None:
    base_url, received = receiver
    first = await _traced_turn(server_factory, base_url)
    received.requests.clear()
    # A follow-up turn in the same conversation is labelled with the same session.
    assert await _traced_turn(server_factory, base_url, session_id=first) == first
    for values in _span_attributes(received):
        assert (values["user.id"], values["session.id"]) == ("alice", first)
