"""The environment the chart renders is accepted by the services' own settings objects.

Each container's env (ConfigMap references resolved from the rendered ConfigMap, Secret
references from the rendered Secret when the chart renders it, else replaced by plausible
values) is loaded through the agent's `Settings` and the
operator's `OperatorSettings`, so a renamed variable or a value the service refuses (say
AUTH_MODE=jwks) fails here rather than in a crash-looping pod. The agent's web page settings
come out as the scenario's `agent.web` values say, and the page's Content-Security-Policy lets
the browser reach the Supabase project when one is configured. The OTEL_* trace settings come
out as `agent.tracing` says: export off without an endpoint, otherwise the URL `tracing.py`
exports to, the service name, the content switch and the headers from the Secret. The RERANK_*
settings come out as `agent.rerank` says (none rendered while its provider is `none`). The
REDIS_* settings come out as `agent.redis` says, with the bundled Redis' URL and password or the
external one's from its Secret, and no Redis at all without either; the chart's defaults and
limits for them are the agent's own. MCP_ENABLED comes out as `agent.mcp.enabled` says, MEMORY_ENABLED as `agent.memory.enabled`.
ATTACHMENTS_ENABLED, MAX_ATTACHMENT_BYTES and MAX_MESSAGE_ATTACHMENT_BYTES come out as
`agent.attachments` says and LLM_VISION as `llm.vision`, in every scenario and rendered with
non-default values; the chart's defaults and bounds for the sizes are the agent's own. Every
variable the chart sets on the agent is one its settings read. The operator's job policy comes
out as `operator.jobs.policy` says.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi import FastAPI

from scripts import chart_values
from tests.chart.tools import CHART, CI_VALUES, by_kind, named, render

if TYPE_CHECKING:
    from ragkeeper_agent.settings import Settings

SCENARIOS = [
    "minimal-values",
    "production-values",
    "namespaced-values",
    "manifests-values",
    "sso-values",
    "redis-values",
]
SECRET_VALUES = {
    "DATABASE_URL": "postgresql://ragkeeper:s3cret@db.example.com:5432/ragkeeper",
    "AUTH_JWT_SECRET": "x" * 48,
    "RERANK_API_KEY": "rk-" + "r" * 40,
    "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Basic%20cGstbGY6c2stbGY=,x-langfuse-ingestion-version=4",
    "REDIS_URL": "rediss://cache.example.com:6380/0",
}


def _resolved_env(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    configmaps = {cm["metadata"]["name"]: cm["data"] for cm in by_kind(objects, "ConfigMap")}
    secrets = {s["metadata"]["name"]: s.get("stringData", {}) for s in by_kind(objects, "Secret")}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        source = item["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[item["name"]] = configmaps[ref["name"]][ref["key"]]
        else:
            ref = source["secretKeyRef"]
            rendered = secrets.get(ref["name"], {}).get(ref["key"])
            env[item["name"]] = rendered or SECRET_VALUES.get(item["name"], "k" * 40)
    return env


def _load_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _overlay(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in given.items():
        nested = isinstance(value, dict) and isinstance(defaults.get(key), dict)
        merged[key] = _overlay(defaults[key], value) if nested else value
    return merged


def _values(scenario: str, *keys: str) -> dict[str, Any]:
    """A section of a scenario's values: the chart defaults overlaid with the ci/ file's."""
    defaults = yaml.safe_load(chart_values.VALUES.read_text())
    path = next(p for p in CI_VALUES if p.stem == scenario)
    given = yaml.safe_load(path.read_text())
    for key in keys:
        defaults, given = defaults[key], (given or {}).get(key) or {}
    return _overlay(defaults, given)


def _agent_values(scenario: str, section: str) -> dict[str, Any]:
    """agent.<section> of a scenario: the chart defaults overlaid with the ci/ file's values."""
    return _values(scenario, "agent", section)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_agent_settings_accept_the_rendered_env(
    rendered: dict[str, list[dict[str, Any]]], scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragkeeper_agent.settings import Settings
    from ragkeeper_agent.web import content_security_policy, page_config

    objects = rendered[scenario]
    container = named(objects, "Deployment", "-agent")["spec"]["template"]["spec"]["containers"][0]
    _load_env(monkeypatch, _resolved_env(objects, container))
    settings = Settings()  # type: ignore[call-arg]
    assert settings.host == "0.0.0.0"
    assert settings.port == container["ports"][0]["containerPort"]
    assert settings.auth_mode == "jwt"
    assert settings.auth_jwt_secret.get_secret_value() or settings.auth_jwks_url
    auth = _agent_values(scenario, "auth")
    assert (settings.auth_audience, settings.auth_issuer) == (auth["audience"], auth["issuer"])
    assert settings.rate_limit_per_minute > 0
    agent = _values(scenario, "agent")
    assert settings.auth_failures_per_minute == agent["authFailuresPerMinute"]
    assert settings.public_requests_per_minute == agent["publicRequestsPerMinute"]
    assert settings.trusted_proxies == agent["trustedProxies"]
    # Kubernetes waits longer than the server's own graceful shutdown (build_server), so
    # running turns end with their error line and spans are flushed before SIGKILL.
    from ragkeeper_agent.__main__ import build_server

    pod = named(objects, "Deployment", "-agent")["spec"]["template"]["spec"]
    graceful = build_server(settings, FastAPI()).config.timeout_graceful_shutdown
    assert graceful is not None and settings.shutdown_grace_seconds < graceful
    assert pod["terminationGracePeriodSeconds"] >= graceful + 10
    web = _agent_values(scenario, "web")
    assert settings.web_enabled is web["enabled"]
    assert settings.web_title == web["title"]
    assert settings.web_supabase_url == web["supabase"]["url"]
    assert settings.web_supabase_anon_key == web["supabase"]["anonKey"]
    connect_src = next(
        d.split()[1:] for d in content_security_policy(settings).split("; ") if "connect-src" in d
    )
    supabase_url = web["supabase"]["url"]
    issuer = web["oidc"]["issuer"]
    assert (settings.web_oidc_issuer, settings.web_oidc_client_id) == (
        issuer,
        web["oidc"]["clientId"],
    )
    expected = ["'self'"] + [
        "{0.scheme}://{0.netloc}".format(urlsplit(url)) for url in (supabase_url, issuer) if url
    ]
    assert connect_src == list(dict.fromkeys(expected))
    page = page_config(settings)
    assert page["title"] == web["title"]
    assert page["supabase"] == (
        {"url": supabase_url, "anon_key": web["supabase"]["anonKey"]} if supabase_url else None
    )
    _assert_tracing(settings, _agent_values(scenario, "tracing"))
    embedding = settings.embedding  # the EMBEDDING_* variables, read by the agent's Settings
    assert (
        embedding.provider == named(objects, "ConfigMap", "-config")["data"]["EMBEDDING_PROVIDER"]
    )
    assert embedding.resolved_model
    _assert_rerank(settings, _agent_values(scenario, "rerank"))
    _assert_redis(settings, objects, scenario)
    _assert_mcp(settings, objects, scenario)
    assert settings.memory_enabled is _agent_values(scenario, "memory")["enabled"]
    _assert_attachments(settings, _agent_values(scenario, "attachments"), _values(scenario, "llm"))


def _assert_attachments(
    settings: Settings, attachments: dict[str, Any], llm: dict[str, Any]
) -> None:
    """ATTACHMENTS_ENABLED, MAX_*ATTACHMENT_BYTES as `agent.attachments` says; LLM_VISION as `llm.vision`."""
    assert settings.attachments_enabled is attachments["enabled"]
    assert settings.max_attachment_bytes == attachments["maxFileBytes"]
    assert settings.max_message_attachment_bytes == attachments["maxMessageBytes"]
    assert settings.llm_vision is llm["vision"]


@pytest.mark.parametrize(
    ("attachments", "vision"),
    [
        ({"enabled": False, "maxFileBytes": 1024, "maxMessageBytes": 1024}, True),
        ({"enabled": True, "maxFileBytes": 104857600, "maxMessageBytes": 209715200}, False),
        ({"enabled": True, "maxFileBytes": 3000000, "maxMessageBytes": 7000001}, True),
    ],
)
def test_attachment_and_vision_values_reach_the_agents_settings(
    attachments: dict[str, Any], vision: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendered with values other than the defaults, the agent container's env loads into
    the agent's Settings with exactly those values."""
    from ragkeeper_agent.settings import Settings

    sets = [f"agent.attachments.{key}={str(value).lower()}" for key, value in attachments.items()]
    objects = render(sets=[*sets, f"llm.vision={str(vision).lower()}"])
    container = named(objects, "Deployment", "-agent")["spec"]["template"]["spec"]["containers"][0]
    env = _resolved_env(objects, container)
    assert env["LLM_VISION"] == str(vision).lower()
    _load_env(monkeypatch, env)
    _assert_attachments(Settings(), attachments, {"vision": vision})  # type: ignore[call-arg]


def test_ci_scenarios_cover_attachments_on_and_off_and_vision_on_and_off() -> None:
    seen = {
        (_agent_values(path.stem, "attachments")["enabled"], _values(path.stem, "llm")["vision"])
        for path in CI_VALUES
    }
    assert {(True, True), (True, False), (False, False)} <= seen


def test_chart_attachment_defaults_and_limits_are_the_agents() -> None:
    """agent.attachments and llm.vision have the agent's defaults; the sizes its bounds."""
    from ragkeeper_agent.settings import Settings

    values = yaml.safe_load(chart_values.VALUES.read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    properties = schema["properties"]["agent"]["properties"]["attachments"]["properties"]
    fields = Settings.model_fields
    assert values["llm"]["vision"] is fields["llm_vision"].default
    assert values["agent"]["attachments"]["enabled"] is fields["attachments_enabled"].default
    for key, name in [
        ("maxFileBytes", "max_attachment_bytes"),
        ("maxMessageBytes", "max_message_attachment_bytes"),
    ]:
        field = fields[name]
        assert values["agent"]["attachments"][key] == field.default, key
        _assert_same_bounds(field, properties[key], key)


def _assert_mcp(settings: Settings, objects: list[dict[str, Any]], scenario: str) -> None:
    """MCP_ENABLED as `agent.mcp.enabled` says, and an Ingress lists `/mcp` only then."""
    enabled = _agent_values(scenario, "mcp")["enabled"]
    assert settings.mcp_enabled is enabled
    for ingress in by_kind(objects, "Ingress"):
        paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
        assert paths == (["/mcp", "/"] if enabled else ["/"])


def _assert_redis(settings: Settings, objects: list[dict[str, Any]], scenario: str) -> None:
    bundled = _values(scenario, "redis")["enabled"]
    external = _values(scenario, "externalRedis")
    if not (bundled or external["existingSecret"]):
        assert not settings.redis_configured
        return
    assert settings.redis_configured
    url = settings.redis_url.get_secret_value()
    password = settings.redis_password.get_secret_value()
    if bundled:
        secret = named(objects, "Secret", "-redis")["stringData"]
        service = named(objects, "Service", "-redis")["metadata"]
        assert url == secret["REDIS_URL"]
        assert urlsplit(url).hostname == f"{service['name']}.{service['namespace']}.svc"
        assert password == secret["REDIS_PASSWORD"]
    else:
        assert url == SECRET_VALUES["REDIS_URL"]
        assert bool(password) is bool(external["passwordKey"])
    tuning = _agent_values(scenario, "redis")
    assert settings.redis_socket_timeout_seconds == tuning["socketTimeoutSeconds"]
    assert settings.redis_connect_timeout_seconds == tuning["connectTimeoutSeconds"]
    assert settings.redis_max_connections == tuning["maxConnections"]
    assert settings.redis_embedding_ttl_seconds == tuning["embeddingTtlSeconds"]
    assert settings.redis_search_ttl_seconds == tuning["searchTtlSeconds"]
    assert settings.redis_retry_seconds == tuning["retrySeconds"]
    assert settings.redis_key_prefix == tuning["keyPrefix"]


def test_ci_scenarios_cover_no_bundled_and_external_redis() -> None:
    kinds = {
        "bundled"
        if _values(path.stem, "redis")["enabled"]
        else "external"
        if _values(path.stem, "externalRedis")["existingSecret"]
        else "none"
        for path in CI_VALUES
    }
    assert kinds == {"none", "bundled", "external"}


# JSON Schema keyword of each pydantic constraint.
_CONSTRAINTS = {
    "gt": "exclusiveMinimum",
    "ge": "minimum",
    "lt": "exclusiveMaximum",
    "le": "maximum",
    "min_length": "minLength",
    "max_length": "maxLength",
    "pattern": "pattern",
}


def _assert_same_bounds(field: Any, schema: dict[str, Any], key: str) -> None:
    """The schema's bounds of a value are its pydantic field's (``ge`` is ``minimum`` ...)."""
    bounds = {
        keyword: getattr(meta, attr)
        for meta in field.metadata
        for attr, keyword in _CONSTRAINTS.items()
        if getattr(meta, attr, None) is not None
    }
    schema_bounds = {k: v for k, v in schema.items() if k in _CONSTRAINTS.values()}
    assert schema_bounds == bounds, key


def test_chart_redis_defaults_and_limits_are_the_agents() -> None:
    """agent.redis.<camelCase> is REDIS_<SNAKE_CASE>: same default, same bounds."""
    from ragkeeper_agent.settings import Settings

    defaults = yaml.safe_load(chart_values.VALUES.read_text())["agent"]["redis"]
    schema = json.loads((CHART / "values.schema.json").read_text())
    properties = schema["properties"]["agent"]["properties"]["redis"]["properties"]
    fields = {
        name: field for name, field in Settings.model_fields.items() if name.startswith("redis_")
    }
    tuned = {"redis_" + re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): key for key in defaults}
    assert set(tuned) == set(fields) - {"redis_url", "redis_password"}
    for name, key in tuned.items():
        field = fields[name]
        assert defaults[key] == field.default, key
        _assert_same_bounds(field, properties[key], key)


def _assert_rerank(settings: Settings, rerank: dict[str, Any]) -> None:
    from ragkeeper_knowledge.rerank import RerankConfig

    if rerank["provider"] == "none":
        assert settings.rerank == RerankConfig()
        return
    config = settings.rerank
    assert (config.provider, config.base_url) == (rerank["provider"], rerank["baseUrl"])
    assert config.model == (rerank["model"] or None)
    assert (config.candidates, config.max_retries) == (rerank["candidates"], rerank["maxRetries"])
    assert config.timeout_seconds == rerank["timeoutSeconds"]
    key = config.api_key.get_secret_value() if config.api_key else None
    assert key == (SECRET_VALUES["RERANK_API_KEY"] if rerank["existingSecret"] else None)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_variable_the_chart_sets_on_the_agent_is_a_setting(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    """A renamed or misspelt variable would be ignored (the settings ignore unknown names)."""
    from ragkeeper_agent.settings import NESTED_VARIABLES, Settings

    read = {
        name.upper()
        for name, field in Settings.model_fields.items()
        if name not in NESTED_VARIABLES
    }
    for variables in NESTED_VARIABLES.values():
        read |= set(variables.values())
    container = named(rendered[scenario], "Deployment", "-agent")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert sorted({item["name"] for item in container["env"]} - read) == []


def _assert_tracing(settings: Settings, tracing: dict[str, Any]) -> None:
    from ragkeeper_agent.tracing import parse_headers, traces_endpoint

    if not (tracing["endpoint"] or tracing["tracesEndpoint"]):
        assert traces_endpoint(settings) is None
        assert settings.otel_exporter_otlp_headers.get_secret_value() == ""
        return
    expected = tracing["tracesEndpoint"] or tracing["endpoint"].rstrip("/") + "/v1/traces"
    assert traces_endpoint(settings) == expected
    assert settings.otel_service_name == tracing["serviceName"]
    assert settings.otel_include_content is tracing["includeContent"]
    headers = parse_headers(settings.otel_exporter_otlp_headers.get_secret_value())
    if tracing["headersSecret"]["name"]:
        assert headers["authorization"].startswith("Basic ")
    else:
        assert headers == {}


def test_ci_scenarios_cover_every_rerank_provider() -> None:
    providers = {_agent_values(path.stem, "rerank")["provider"] for path in CI_VALUES}
    keyed = {bool(_agent_values(path.stem, "rerank")["existingSecret"]) for path in CI_VALUES}
    assert providers == set(chart_values.RERANK_PROVIDERS) and keyed == {True, False}


def test_ci_scenarios_cover_tracing_on_and_off() -> None:
    endpoints = {
        (bool(t["endpoint"]), bool(t["tracesEndpoint"]), bool(t["headersSecret"]["name"]))
        for t in (_agent_values(path.stem, "tracing") for path in CI_VALUES)
    }
    assert {(False, False, False), (True, False, True), (False, True, False)} <= endpoints


def test_schema_offers_the_embedding_providers_the_store_knows() -> None:
    from typing import get_args

    from ragkeeper_knowledge.embedding.factory import EmbeddingProvider

    assert set(chart_values.EMBEDDING_PROVIDERS) == set(get_args(EmbeddingProvider)) - {"hashing"}


def test_schema_offers_the_rerank_providers_the_store_knows() -> None:
    from typing import get_args

    from ragkeeper_knowledge.rerank import RerankProvider

    assert set(chart_values.RERANK_PROVIDERS) == set(get_args(RerankProvider))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_settings_accept_the_rendered_env(
    rendered: dict[str, list[dict[str, Any]]], scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragkeeper_operator.settings import OperatorSettings

    objects = rendered[scenario]
    container = named(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][
        0
    ]
    env = _resolved_env(objects, container)
    _load_env(monkeypatch, env)
    settings = OperatorSettings()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert settings.metrics_port == ports["metrics"]
    assert settings.health_port == ports["liveness"]
    assert settings.rag_image == env["RAG_IMAGE"]
    assert settings.rag_image.rsplit(":", 1)[0].endswith("/ragkeeper-rag")
    assert list(settings.watch_namespaces) == [
        r["metadata"]["namespace"] for r in by_kind(objects, "Role")
    ]
    assert settings.clusterwide is (not by_kind(objects, "Role"))
    policy = _values(scenario, "operator", "jobs", "policy")
    assert settings.job_allowed_images == tuple(policy["allowedImages"])
    assert settings.job_allowed_nfs_servers == tuple(policy["allowedNfsServers"])
    assert (settings.job_max_cpu, settings.job_max_memory) == (
        str(policy["maxCpu"]),
        str(policy["maxMemory"]),
    )
    assert settings.job_credentials_label == policy["credentialsLabel"]
    ocr = _values(scenario, "operator", "jobs", "ocr")
    assert (settings.job_ocr_enabled, settings.job_ocr_max_pixels) == (
        ocr["enabled"],
        ocr["maxPixels"],
    )
    # The jobs get the ingestion login's DSN: the key the migration Job provisions as
    # INGEST_DATABASE_URL, in the Secret the agent's DSN comes from (unless overridden).
    migrate = named(objects, "Job", "-migration")["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in migrate["env"]}
    assert settings.database_secret_name == refs["INGEST_DATABASE_URL"]["name"]
    assert settings.database_secret_key == refs["INGEST_DATABASE_URL"]["key"]
    agent = named(objects, "Deployment", "-agent")["spec"]["template"]["spec"]["containers"][0]
    agent_ref = next(e for e in agent["env"] if e["name"] == "DATABASE_URL")
    assert agent_ref["valueFrom"]["secretKeyRef"] == refs["AGENT_DATABASE_URL"]
    assert settings.database_secret_key != refs["DATABASE_URL"]["key"]  # never the migrator's
