"""The chart renders, lints and validates for every ci/ scenario, with the hardening it promises.

Real helm (v4) renders; every object is validated against the official Kubernetes schemas
(kubernetes-validate --strict) for the oldest and newest Kubernetes versions the chart supports.
"""

from __future__ import annotations

import re
from itertools import takewhile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.tools import (
    CHART,
    CI_VALUES,
    NAMESPACE,
    by_kind,
    named,
    pod_specs,
    render,
    run,
    tool,
)

# Chart.yaml kubeVersion is ">=1.29.0-0"; 1.37 is the newest schema set kubernetes-validate has.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
# Prometheus Operator kinds have no schema in kubernetes-validate; promtool and the structure
# tests in test_monitoring.py cover them.
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
SCENARIOS = [path.stem for path in CI_VALUES]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container.get("env", [])}


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_lint_strict_passes_for_scenario(values: Path) -> None:
    proc = run([tool("helm"), "lint", "--strict", str(CHART), "-f", str(values), "-n", NAMESPACE])
    assert "0 chart(s) failed" in proc.stdout


def test_every_scenario_is_rendered() -> None:
    assert {"minimal-values", "production-values", "namespaced-values"} <= set(SCENARIOS)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_rendered_objects_validate_strictly(values: Path, version: str) -> None:
    proc = run(
        [tool("helm"), "template", "ragkeeper", str(CHART), "-n", NAMESPACE, "-f", str(values)]
        + ["--include-crds"]
    )
    objects = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    validated = 0
    for obj in objects:
        if obj["kind"] in PROMETHEUS_OPERATOR_KINDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(
                f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {exc}"
            ) from exc
        validated += 1
    assert validated >= 10


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_runs_hardened(rendered: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    specs = pod_specs(rendered[scenario])
    assert len(specs) >= 3
    for name, spec in specs:
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["runAsUser"] > 0, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in sc["capabilities"], name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: read-only root needs an emptyDir /tmp"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_only_the_operator_mounts_a_token(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    for name, spec in pod_specs(rendered[scenario]):
        wants_token = name.endswith("-operator") and name.startswith("Deployment/")
        assert spec["automountServiceAccountToken"] is wants_token, name


def test_images_default_to_the_app_version(rendered: dict[str, list[dict[str, Any]]]) -> None:
    tag = CHART_META["appVersion"]
    objects = rendered["minimal-values"]
    agent = named(objects, "Deployment", "-agent")["spec"]["template"]["spec"]["containers"][0]
    operator = named(objects, "Deployment", "-operator")["spec"]["template"]["spec"]
    assert agent["image"] == f"ghcr.io/ragkeeper/ragkeeper-agent:{tag}"
    op_container = operator["containers"][0]
    assert op_container["image"] == f"ghcr.io/ragkeeper/ragkeeper-operator:{tag}"
    assert _env(op_container)["RAG_IMAGE"]["value"] == f"ghcr.io/ragkeeper/ragkeeper-rag:{tag}"


def test_agent_follows_the_api_contract(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deploy = named(rendered["production-values"], "Deployment", "-agent")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    env = _env(container)
    assert env["HOST"]["value"] == "0.0.0.0"
    assert env["PORT"]["value"] == "8000"
    assert container["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9091, "protocol": "TCP"},
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert env["AUTH_MODE"]["value"] == "jwt", "JWKS is AUTH_MODE=jwt with AUTH_JWKS_URL"
    assert env["AUTH_JWKS_URL"]["value"].startswith("https://")
    assert "AUTH_JWT_SECRET" not in env
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "ragkeeper-database",
        "key": "AGENT_DATABASE_URL",
    }
    assert env["LLM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "ragkeeper-llm"
    assert env["CORS_ORIGINS"]["value"] == "https://chat.example.com"
    assert "replicas" not in deploy["spec"], "the HPA owns the replica count"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_auth_is_never_disabled(rendered: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    container = named(rendered[scenario], "Deployment", "-agent")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert _env(container)["AUTH_MODE"]["value"] == "jwt"


def test_agent_and_operator_share_one_embedding_config(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["production-values"]
    config = named(objects, "ConfigMap", "-config")
    assert config["data"]["EMBEDDING_PROVIDER"] == "openai"
    for suffix in ("-agent", "-operator"):
        spec = named(objects, "Deployment", suffix)["spec"]["template"]["spec"]
        env = _env(spec["containers"][0])
        for key in ("EMBEDDING_PROVIDER", "EMBEDDING_BASE_URL", "EMBEDDING_MODEL_CHOICE"):
            ref = env[key]["valueFrom"]["configMapKeyRef"]
            assert ref == {"name": config["metadata"]["name"], "key": key}
    agent = named(objects, "Deployment", "-agent")["spec"]["template"]["spec"]["containers"][0]
    api_key = _env(agent)["EMBEDDING_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert api_key == {"name": "ragkeeper-embedding", "key": "EMBEDDING_API_KEY"}
    operator = named(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][
        0
    ]
    op_env = _env(operator)
    assert "EMBEDDING_API_KEY" not in op_env, "the operator passes a Secret reference, not the key"
    assert op_env["EMBEDDING_API_KEY_SECRET_NAME"]["value"] == "ragkeeper-embedding"
    assert op_env["EMBEDDING_API_KEY_SECRET_KEY"]["value"] == "EMBEDDING_API_KEY"


def test_operator_is_one_recreated_replica_with_kopf_liveness(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    deploy = named(rendered["namespaced-values"], "Deployment", "-operator")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"liveness": 8080, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert "readinessProbe" not in container
    env = _env(container)
    assert env["WATCH_NAMESPACES"]["value"] == "team-a,team-b"
    assert env["METRICS_PORT"]["value"] == "9090"
    assert env["DATABASE_SECRET_NAME"]["value"] == "ragkeeper-database"
    assert env["DATABASE_SECRET_KEY"]["value"] == "INGEST_DATABASE_URL", "the jobs' own login"


def test_cluster_wide_operator_gets_one_cluster_role(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["minimal-values"]
    assert by_kind(objects, "Role") == []
    role = named(objects, "ClusterRole", "-operator")
    binding = named(objects, "ClusterRoleBinding", "-operator")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"customresourcedefinitions", "datasources", "cronjobs"} <= resources
    assert "namespaces" not in resources, "cluster-wide, kopf does not observe namespaces"


def test_namespaced_operator_gets_roles_only_in_watched_namespaces(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["namespaced-values"]
    assert by_kind(objects, "ClusterRole") == []
    assert by_kind(objects, "ClusterRoleBinding") == []
    roles = by_kind(objects, "Role")
    bindings = by_kind(objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"][0]["namespace"] == NAMESPACE


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_grants_no_wildcards_or_secret_listing(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    roles = by_kind(rendered[scenario], "ClusterRole") + by_kind(rendered[scenario], "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], rule
            if "secrets" in rule["resources"]:
                assert rule["verbs"] == ["get"], "the operator only checks that Secrets exist"


def test_every_rbac_rule_names_who_needs_it() -> None:
    lines = (CHART / "templates" / "operator-rbac.yaml").read_text().splitlines()
    rule_lines = [i for i, line in enumerate(lines) if line.strip().startswith("- apiGroups:")]
    assert len(rule_lines) >= 8
    for index in rule_lines:
        # The comment block right above the rule: who needs it first, then any "# needed:" lines.
        block = list(takewhile(lambda line: line.strip().startswith("#"), reversed(lines[:index])))
        assert block, lines[index]
        who = block[-1].strip()
        assert re.match(r"# (kopf framework|ragkeeper operator)\b", who), lines[index]


def test_migration_runs_before_install_with_an_external_database(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    job = named(rendered["production-values"], "Job", "-migration")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "ragkeeper_knowledge.migrate"]
    assert container["image"].split(":")[0].endswith("/ragkeeper-agent")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # The migrator's DSN, plus the two logins it provisions (docs/deploy.md, Database roles).
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]}
    assert keys == {
        "DATABASE_URL": "DATABASE_URL",
        "AGENT_DATABASE_URL": "AGENT_DATABASE_URL",
        "INGEST_DATABASE_URL": "INGEST_DATABASE_URL",
    }


def test_migration_waits_for_the_bundled_database_on_first_install(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    job = named(rendered["minimal-values"], "Job", "-migration")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_bundled_database_only_without_an_existing_secret(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    minimal = rendered["minimal-values"]
    statefulset = named(minimal, "StatefulSet", "-database")
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    secret = named(minimal, "Secret", "-database")
    dsns = secret["stringData"]
    assert dsns["DATABASE_URL"].startswith("postgresql://ragkeeper:")
    assert dsns["AGENT_DATABASE_URL"].startswith("postgresql://ragkeeper_agent_login:")
    assert dsns["INGEST_DATABASE_URL"].startswith("postgresql://ragkeeper_ingest_login:")
    passwords = {dsn.split(":")[2].split("@")[0] for dsn in dsns.values() if "://" in dsn}
    assert len(passwords) == 3 and dsns["POSTGRES_PASSWORD"] not in passwords
    # The superuser stays in the container; the init script makes the non-superuser migrator.
    postgres = statefulset["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in postgres["env"]}
    assert env["POSTGRES_USER"]["value"] == "postgres"
    assert env["RAGKEEPER_MIGRATOR"]["value"] == "ragkeeper"
    init = named(minimal, "ConfigMap", "-database-init")["data"]["10-ragkeeper-migrator.sh"]
    assert "CREATEROLE BYPASSRLS NOSUPERUSER" in init and 'OWNER TO :"migrator"' in init
    mounts = {m["mountPath"] for m in postgres["volumeMounts"]}
    assert "/docker-entrypoint-initdb.d" in mounts
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert by_kind(rendered["production-values"], "StatefulSet") == []


def test_production_exposes_the_agent_through_tls_ingress_with_hpa_and_pdb(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["production-values"]
    ingress = named(objects, "Ingress", "-agent")
    assert ingress["spec"]["tls"] == [{"hosts": ["rag.example.com"], "secretName": "ragkeeper-tls"}]
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    hpa = named(objects, "HorizontalPodAutoscaler", "-agent")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert named(objects, "PodDisruptionBudget", "-agent")["spec"]["minAvailable"] == 2
    spread = named(objects, "Deployment", "-agent")["spec"]["template"]["spec"]
    assert spread["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


def test_single_replica_gets_no_pdb(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert by_kind(rendered["minimal-values"], "PodDisruptionBudget") == []


def test_network_policies_cover_every_component(rendered: dict[str, list[dict[str, Any]]]) -> None:
    minimal = rendered["minimal-values"]
    policies = by_kind(minimal, "NetworkPolicy")
    names = {p["metadata"]["name"].removeprefix("ragkeeper-") for p in policies}
    assert names == {"agent", "operator", "migration", "database", "ingestion"}
    agent = named(minimal, "NetworkPolicy", "-agent")
    assert agent["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    peers = agent["spec"]["ingress"][0]["from"]
    assert all("namespaceSelector" in peer for peer in peers), "never open to every pod"
    database = named(minimal, "NetworkPolicy", "-database")
    assert database["spec"]["egress"] == []


def test_ingestion_jobs_get_a_policy_in_every_watched_namespace(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    policies = [
        p
        for p in by_kind(rendered["namespaced-values"], "NetworkPolicy")
        if p["metadata"]["name"].endswith("-ingestion")
    ]
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["team-a", "team-b"]
    for policy in policies:
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert selector == {
            "app.kubernetes.io/part-of": "ragkeeper",
            "app.kubernetes.io/component": "ingestion",
            "app.kubernetes.io/managed-by": "ragkeeper-operator",
        }
        ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert ports == {53, 5432, 443}, "DNS, the database and Google's APIs only"


def test_disabled_network_policies_render_none() -> None:
    objects = render(CI_VALUES[0], sets=["networkPolicy.enabled=false"])
    assert by_kind(objects, "NetworkPolicy") == []


def test_notes_tell_the_next_commands() -> None:
    proc = run(
        [tool("helm"), "install", "ragkeeper", str(CHART), "-n", NAMESPACE, "--dry-run=client"]
    )
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n ragkeeper port-forward svc/ragkeeper-agent 8000:80" in notes
    assert "manifests/samples/" in notes
    assert "bundled Postgres is for trying" in notes
