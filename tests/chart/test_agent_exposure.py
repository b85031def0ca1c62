"""What the chart lets in: no metrics through the Ingress, no extraEnv over the chart's own
settings, and a bundled database only the agent, the migration and the operator's job pods reach.

* ``/metrics`` is served on its own container port (METRICS_PORT); the Ingress routes the Service's
  ``http`` port, which targets the API port only; Prometheus objects and the NetworkPolicy's
  ``metricsFrom`` rule name the metrics port.
* ``agent.extraEnv`` comes first in the container's env (for a repeated name Kubernetes keeps the
  last), and values.schema.json refuses every name the chart sets itself, in any case (the
  agent's settings are case-insensitive); helm's refusal is in test_schema.py.
* ``agent.attachments.maxMessageBytes`` under ``maxFileBytes`` is refused, and the production
  values' ingress-nginx body size lets the chat route's largest body (MAX_REQUEST_BYTES plus the
  base64 size of one message's files) reach the agent.
* The database's NetworkPolicy admits ingestion pods by the labels the operator puts on them,
  from the watched namespaces only (every namespace when the operator watches all).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragkeeper_operator.builders import labels_for
from scripts import chart_values
from tests.chart.tools import CHART, CI_VALUES, by_kind, helm_template, named, render

MINIMAL = next(path for path in CI_VALUES if path.stem == "minimal-values")
PRODUCTION = next(path for path in CI_VALUES if path.stem == "production-values")
MONITORED = [
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.podMonitor.enabled=true",
]


def _agent(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec = named(objects, "Deployment", "-agent")["spec"]["template"]["spec"]
    container: dict[str, Any] = spec["containers"][0]
    return container


def _env_value(container: dict[str, Any], name: str) -> str:
    values = [item["value"] for item in container["env"] if item["name"] == name]
    assert len(values) == 1, name
    return str(values[0])


def test_the_ingress_reaches_only_the_api_port() -> None:
    objects = render(PRODUCTION, sets=MONITORED)
    container = _agent(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "metrics": 9091}
    assert _env_value(container, "PORT") == "8000"
    assert _env_value(container, "METRICS_PORT") == "9091"

    service = named(objects, "Service", "-agent")
    targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert targets == {"http": "http", "metrics": "metrics"}
    ingress = named(objects, "Ingress", "-agent")
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends and all(b["port"] == {"name": "http"} for b in backends), backends

    for kind, key in (("ServiceMonitor", "endpoints"), ("PodMonitor", "podMetricsEndpoints")):
        endpoint = named(objects, kind, "-agent")["spec"][key][0]
        assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics"), kind


def test_only_prometheus_may_reach_the_metrics_port() -> None:
    objects = render()  # the chart's defaults
    values = yaml.safe_load(chart_values.VALUES.read_text())["networkPolicy"]
    rules = named(objects, "NetworkPolicy", "-agent")["spec"]["ingress"]
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in rules}
    assert all(len(rule["ports"]) == 1 for rule in rules)
    assert by_port == {8000: values["agentIngressFrom"], 9091: values["metricsFrom"]}


@pytest.mark.parametrize("enabled", [True, False])
def test_mcp_is_served_on_the_api_port_with_its_ingress_path(enabled: bool) -> None:
    """`agent.mcp.enabled` (on by default: the chart always configures authentication) sets
    MCP_ENABLED and lists `/mcp` in the Ingress, on the API port; the NetworkPolicy is the
    same either way, since it is the same port."""
    sets = ["agent.ingress.enabled=true", f"agent.mcp.enabled={str(enabled).lower()}"]
    objects = render(MINIMAL, sets=sets)
    assert _env_value(_agent(objects), "MCP_ENABLED") == str(enabled).lower()
    paths = named(objects, "Ingress", "-agent")["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/mcp", "Exact")] * enabled + [
        ("/", "Prefix")
    ]
    assert all(p["backend"]["service"]["port"] == {"name": "http"} for p in paths)
    policy = named(objects, "NetworkPolicy", "-agent")["spec"]
    assert policy == named(render(MINIMAL), "NetworkPolicy", "-agent")["spec"]
    defaults = yaml.safe_load(chart_values.VALUES.read_text())
    assert defaults["agent"]["mcp"]["enabled"] is True


def _reserved() -> re.Pattern[str]:
    schema = json.loads((CHART / "values.schema.json").read_text())
    name = schema["properties"]["agent"]["properties"]["extraEnv"]["items"]["properties"]["name"]
    assert name["not"]["pattern"] == chart_values.RESERVED_AGENT_ENV
    return re.compile(name["not"]["pattern"])


# Scenarios that switch on every optional variable the chart can set on the agent.
ENV_SCENARIOS = [
    (MINIMAL, []),
    (MINIMAL, ["agent.auth.mode=jwks", "agent.auth.jwksUrl=https://id.example.com/jwks.json"]),
    (
        MINIMAL,
        [
            "agent.tracing.endpoint=https://otel.example.com",
            "agent.tracing.tracesEndpoint=https://otel.example.com/v1/traces",
            "agent.tracing.headersSecret.name=otel",
            "agent.web.title=Handbook",
            "llm.existingSecret=llm",
            "embedding.existingSecret=embedding",
        ],
    ),
    *((path, []) for path in CI_VALUES),
]


def test_schema_reserves_every_name_the_chart_sets_on_the_agent() -> None:
    reserved = _reserved()
    names: set[str] = set()
    for path, sets in ENV_SCENARIOS:
        names |= {item["name"] for item in _agent(render(path, sets=sets))["env"]}
    assert {"AUTH_MODE", "AUTH_JWT_SECRET", "AUTH_JWKS_URL", "DATABASE_URL"} <= names
    assert {"LLM_API_KEY", "EMBEDDING_API_KEY", "OTEL_EXPORTER_OTLP_HEADERS"} <= names
    assert {"REDIS_URL", "REDIS_PASSWORD", "REDIS_KEY_PREFIX"} <= names
    assert sorted(n for n in names if not reserved.match(n)) == []
    assert reserved.match("auth_mode") and reserved.match("Database_Url")
    assert reserved.match("redis_url") and reserved.match("REDIS_ANYTHING_ELSE")
    assert "MCP_ENABLED" in names and reserved.match("mcp_enabled")
    attachments = {"ATTACHMENTS_ENABLED", "MAX_ATTACHMENT_BYTES", "MAX_MESSAGE_ATTACHMENT_BYTES"}
    assert attachments | {"LLM_VISION"} <= names
    assert reserved.match("llm_vision") and reserved.match("Max_Message_Attachment_Bytes")
    for free in ("SEARXNG_URL", "BRAVE_API_KEY", "LLM_TIMEOUT_SECONDS", "MAX_PROMPT_CHARS"):
        assert not reserved.match(free), free


@pytest.mark.parametrize(
    ("file_bytes", "message_bytes", "accepted"),
    [(5242880, 5242880, True), (1024, 209715200, True), (5242880, 5242879, False)],
)
def test_a_message_may_carry_one_file_of_the_largest_size(
    file_bytes: int, message_bytes: int, accepted: bool
) -> None:
    """agent.attachments.maxMessageBytes under maxFileBytes is refused by the chart, as the
    agent's settings refuse it (JSON Schema cannot compare two values, a template `fail` does)."""
    proc = helm_template(
        sets=[
            f"agent.attachments.maxFileBytes={file_bytes}",
            f"agent.attachments.maxMessageBytes={message_bytes}",
        ]
    )
    assert (proc.returncode == 0) is accepted, proc.stderr
    if not accepted:
        assert (
            f"agent.attachments.maxMessageBytes ({message_bytes}) must be at least "
            f"agent.attachments.maxFileBytes ({file_bytes})"
        ) in proc.stderr


def _nginx_size(value: str) -> int:
    """ingress-nginx's `proxy-body-size` (nginx's client_max_body_size) in bytes."""
    match = re.fullmatch(r"([0-9]+)([kmg]?)", value.lower())
    assert match, value
    return int(match[1]) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match[2]]


def test_production_ingress_lets_the_largest_chat_message_through() -> None:
    """The chat route takes MAX_REQUEST_BYTES plus the base64 size of all files of a message;
    ingress-nginx refuses more than its `proxy-body-size` (1m when unset) before the agent."""
    from ragkeeper_agent.settings import Settings

    objects = render(PRODUCTION)
    ingress = named(objects, "Ingress", "-agent")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    env = {e["name"]: e.get("value") for e in _agent(objects)["env"]}
    assert env["ATTACHMENTS_ENABLED"] == "true"
    defaults = Settings.model_fields
    assert "MAX_REQUEST_BYTES" not in env, "the agent's default applies"
    request_bytes = defaults["max_request_bytes"].default
    body = request_bytes + -(-int(env["MAX_MESSAGE_ATTACHMENT_BYTES"]) * 4 // 3)
    assert body == 16078166
    assert _nginx_size(size) >= body


def test_extra_env_comes_before_the_charts_own(tmp_path: Path) -> None:
    values = tmp_path / "extra.yaml"
    values.write_text(
        yaml.safe_dump(
            {"agent": {"extraEnv": [{"name": "SEARXNG_URL", "value": "http://searxng:8080"}]}}
        )
    )
    env = _agent(render(MINIMAL, values))["env"]
    assert env[0] == {"name": "SEARXNG_URL", "value": "http://searxng:8080"}
    assert [item["name"] for item in env].index("AUTH_MODE") > 0


def _database_peers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rules = named(objects, "NetworkPolicy", "-database")["spec"]["ingress"]
    assert len(rules) == 1 and rules[0]["ports"] == [{"protocol": "TCP", "port": 5432}]
    peers: list[dict[str, Any]] = rules[0]["from"]
    return peers


@pytest.mark.parametrize(
    ("sets", "namespaces"),
    [
        ([], {}),
        (
            ["operator.watchNamespaces={team-a,team-b}"],
            {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["team-a", "team-b"],
                    }
                ]
            },
        ),
    ],
    ids=["cluster-wide", "watched-namespaces"],
)
def test_database_admits_the_agent_the_migration_and_the_operators_jobs(
    sets: list[str], namespaces: dict[str, Any]
) -> None:
    objects = render(MINIMAL, sets=sets)
    agent, migration, jobs = _database_peers(objects)
    # No namespaceSelector: the release namespace only.
    assert agent == {"podSelector": named(objects, "Deployment", "-agent")["spec"]["selector"]}
    assert migration["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "migration"
    assert set(migration) == {"podSelector"}
    assert jobs["namespaceSelector"] == namespaces
    job_labels = jobs["podSelector"]["matchLabels"]
    assert job_labels["app.kubernetes.io/managed-by"] == "ragkeeper-operator"
    # The operator's Job pods carry every selected label (builders.labels_for).
    assert job_labels.items() <= labels_for("docs", "single").items()
    assert by_kind(objects, "StatefulSet"), "the bundled database is rendered"
