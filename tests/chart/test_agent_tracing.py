"""agent.tracing.* becomes the agent's OTEL_* environment, and only when an endpoint is set.

A default install must export nothing (no OTEL_* variable at all), the export headers carry
credentials (Langfuse's Basic auth, Logfire's write token) so they only ever arrive through a
`secretKeyRef`, and an endpoint that is not an http(s) URL is refused by values.schema.json
at `helm template` time. That the agent's `Settings` accept what is rendered is checked in
test_settings_contract.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.tools import CI_VALUES, helm_template, named, render

MINIMAL = next(path for path in CI_VALUES if path.stem == "minimal-values")
LANGFUSE = "https://cloud.langfuse.com/api/public/otel"
COLLECTOR = "http://otel-collector.observability:4318/v1/traces"


def _agent_env(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    container = named(objects, "Deployment", "-agent")["spec"]["template"]["spec"]["containers"][0]
    env: list[dict[str, Any]] = container["env"]
    return env


def _otel_env(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _agent_env(objects) if e["name"].startswith("OTEL_")}


def test_nothing_is_rendered_by_default() -> None:
    assert _otel_env(render(MINIMAL)) == {}


def test_headers_secret_alone_does_not_turn_export_on() -> None:
    assert _otel_env(render(MINIMAL, sets=["agent.tracing.headersSecret.name=langfuse"])) == {}


def test_env_appears_when_an_endpoint_is_set() -> None:
    sets = [
        f"agent.tracing.endpoint={LANGFUSE}",
        "agent.tracing.serviceName=rag-prod",
        "agent.tracing.includeContent=false",
        "agent.tracing.headersSecret.name=langfuse",
        "agent.tracing.headersSecret.key=headers",
    ]
    env = _otel_env(render(MINIMAL, sets=sets))
    assert env == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": LANGFUSE},
        "OTEL_SERVICE_NAME": {"name": "OTEL_SERVICE_NAME", "value": "rag-prod"},
        "OTEL_INCLUDE_CONTENT": {"name": "OTEL_INCLUDE_CONTENT", "value": "false"},
        "OTEL_EXPORTER_OTLP_HEADERS": {
            "name": "OTEL_EXPORTER_OTLP_HEADERS",
            "valueFrom": {"secretKeyRef": {"name": "langfuse", "key": "headers"}},
        },
    }


def test_traces_endpoint_alone_with_defaults() -> None:
    env = _otel_env(render(MINIMAL, sets=[f"agent.tracing.tracesEndpoint={COLLECTOR}"]))
    assert {name: item["value"] for name, item in env.items()} == {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": COLLECTOR,
        "OTEL_SERVICE_NAME": "ragkeeper-agent",
        "OTEL_INCLUDE_CONTENT": "false",
    }


def test_headers_never_render_as_a_plain_value(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    production = _otel_env(rendered["production-values"])
    headers = production["OTEL_EXPORTER_OTLP_HEADERS"]
    assert "value" not in headers
    assert headers["valueFrom"]["secretKeyRef"] == {
        "name": "ragkeeper-langfuse",
        "key": "OTEL_EXPORTER_OTLP_HEADERS",
    }
    for objects in rendered.values():
        for item in _otel_env(objects).values():
            assert item["name"] != "OTEL_EXPORTER_OTLP_HEADERS" or "value" not in item


def test_the_collector_port_is_reachable_through_extra_agent_egress(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["namespaced-values"]
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in _otel_env(objects)
    egress = named(objects, "NetworkPolicy", "-agent")["spec"]["egress"]
    ports = {port["port"] for rule in egress for port in rule.get("ports", [])}
    assert 4318 in ports


@pytest.mark.parametrize(
    "sets",
    [
        ["agent.tracing.endpoint=otel-collector:4318"],
        ["agent.tracing.endpoint=grpc://otel-collector:4317"],
        ["agent.tracing.tracesEndpoint=https://user:pw@collector.example.com/v1/traces"],
        [f"agent.tracing.endpoint={LANGFUSE}", "agent.tracing.serviceName="],
    ],
)
def test_unusable_values_are_refused_by_the_schema(sets: list[str]) -> None:
    proc = helm_template(MINIMAL, sets=sets)
    assert proc.returncode != 0
    assert "at '/agent/tracing/" in proc.stderr
