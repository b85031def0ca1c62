"""Alert rules pass promtool and fire when they should; the dashboard queries real metrics.

The metric names and labels the rules and the Grafana dashboard use are cross-checked against
the exposition the agent's and the operator's own Prometheus registries produce, so a renamed
metric breaks this test instead of silently emptying a panel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from tests.chart.tools import CHART, by_kind, run, tool

# Labels Prometheus attaches to every scraped series (target labels), and histogram buckets.
TARGET_LABELS = {"namespace", "job", "instance", "pod", "service", "container", "endpoint", "le"}
# Our own metrics, and the standard process_* ones both services export under the same names.
METRIC = re.compile(r"\b(?:ragkeeper|process)_[a-z0-9_]+")
BY_CLAUSE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r"\{([^}]*)\}")
LABEL_IN_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
LEGEND_LABEL = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def _registry_metrics(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Sample names exported by a registry -> the label names they carry."""
    exported: dict[str, set[str]] = {}
    text = generate_latest(registry).decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
    labels_of: dict[str, set[str]] = {}
    collector_names = getattr(registry, "_collector_to_names", {})
    for collector, names in collector_names.items():
        for name in names:
            labels_of[name] = set(getattr(collector, "_labelnames", ()))
    for family, kind in types.items():
        base = family.removesuffix("_total")
        labels = labels_of.get(family, labels_of.get(base, set()))
        if kind == "histogram":
            exported[f"{family}_bucket"] = labels | {"le"}
            exported[f"{family}_sum"] = labels
            exported[f"{family}_count"] = labels
        exported[family] = labels
    return exported


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    from ragkeeper_agent import metrics as agent_metrics
    from ragkeeper_operator.metrics import OperatorMetrics

    names = _registry_metrics(agent_metrics.REGISTRY)
    operator = _registry_metrics(OperatorMetrics().registry)
    shared = {name for name in set(names) & set(operator) if not name.startswith("process_")}
    assert not shared, "agent and operator metric names must not collide"
    names.update(operator)
    return names


@pytest.fixture(scope="module")
def rules(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    objects = by_kind(rendered["production-values"], "PrometheusRule")
    assert len(objects) == 1
    return {"groups": objects[0]["spec"]["groups"]}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CHART / "files" / "dashboard.json").read_text())
    return data


def _check_expression(expr: str, exported: dict[str, set[str]], legend: str = "") -> list[str]:
    """Problems of one PromQL expression: unknown metrics, labels no metric in it carries."""
    problems = []
    metrics = set(METRIC.findall(expr))
    if not metrics:
        return [f"no ragkeeper metric in {expr!r}"]
    unknown = metrics - set(exported)
    problems += [f"{name} is not exported by the services" for name in sorted(unknown)]
    known_labels = TARGET_LABELS.union(*(exported.get(m, set()) for m in metrics))
    used: set[str] = set()
    for clause in BY_CLAUSE.findall(expr):
        used |= {label.strip() for label in clause.split(",") if label.strip()}
    for matcher in MATCHER.findall(expr):
        used |= set(LABEL_IN_MATCHER.findall(matcher))
    used |= set(LEGEND_LABEL.findall(legend))
    problems += [f"label {label!r} unknown in {expr!r}" for label in sorted(used - known_labels)]
    return problems


def test_prometheus_rule_passes_promtool(rules: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    proc = run([tool("promtool"), "check", "rules", str(path)])
    assert "SUCCESS: 9 rules found" in proc.stdout + proc.stderr


def test_prometheus_rule_covers_the_promised_alerts(rules: dict[str, Any]) -> None:
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert alerts >= {
        "RagkeeperOperatorDown",
        "RagkeeperDataSourceNotReady",
        "RagkeeperDataSourceSyncTooOld",
        "RagkeeperIngestionJobFailures",
        "RagkeeperAgentHighErrorRatio",
        "RagkeeperAgentHighLatency",
        "RagkeeperAgentDatabasePoolSaturated",
        "RagkeeperAgentRedisDown",
    }
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"]


def test_alert_rules_use_exported_metrics(
    rules: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    problems = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == "RagkeeperOperatorDown":
                assert "up{" in rule["expr"]
                continue
            problems += _check_expression(rule["expr"], exported)
    assert problems == []


def test_dashboard_queries_use_exported_metrics(
    dashboard: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    problems = []
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            problems += _check_expression(target["expr"], exported, target.get("legendFormat", ""))
            queried |= set(METRIC.findall(target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            problems += _check_expression(variable["query"], exported)
    assert problems == []
    # Both services are on the dashboard.
    assert any(m.startswith("ragkeeper_agent_") for m in queried)
    assert any(m.startswith("ragkeeper_operator_") for m in queried)


def test_dashboard_panels_have_unique_ids_and_fit_the_grid(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    assert dashboard["uid"] == "ragkeeper-overview"


def test_checker_flags_an_unknown_metric_and_label(exported: dict[str, set[str]]) -> None:
    assert _check_expression("sum(ragkeeper_agent_nope_total)", exported)
    bad_label = "sum by (name) (ragkeeper_operator_datasource_ready)"
    assert _check_expression(bad_label, exported) == [f"label 'name' unknown in {bad_label!r}"]


def _alert_test(
    rules_file: Path, series: list[dict[str, str]], alert: str, fired: list[Any]
) -> dict[str, Any]:
    return {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [{"eval_time": "40m", "alertname": alert, "exp_alerts": fired}],
            }
        ],
    }


def test_alerts_fire_on_matching_series(rules: dict[str, Any], tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules))
    ns = 'namespace="team-a", datasource="handbook"'
    agent_job = 'job="ragkeeper-agent", namespace="ragkeeper"'
    agent = f'{agent_job}, pod="agent-0"'
    cases = [
        _alert_test(
            rules_file,
            [{"series": f"ragkeeper_operator_datasource_ready{{{ns}}}", "values": "0x60"}],
            "RagkeeperDataSourceNotReady",
            [
                {
                    "exp_labels": {
                        "severity": "warning",
                        "namespace": "team-a",
                        "datasource": "handbook",
                    },
                    "exp_annotations": {
                        "summary": "DataSource team-a/handbook is not Ready.",
                        "description": "Run `kubectl describe datasource -n team-a handbook` "
                        "for the reason.",
                    },
                }
            ],
        ),
        _alert_test(
            rules_file,
            [
                {
                    "series": 'ragkeeper_agent_http_requests_total{job="ragkeeper-agent", '
                    'namespace="ragkeeper", status="500"}',
                    "values": "0+10x60",
                },
                {
                    "series": 'ragkeeper_agent_http_requests_total{job="ragkeeper-agent", '
                    'namespace="ragkeeper", status="200"}',
                    "values": "0+10x60",
                },
            ],
            "RagkeeperAgentHighErrorRatio",
            [
                {
                    "exp_labels": {"severity": "critical", "namespace": "ragkeeper"},
                    "exp_annotations": {
                        "summary": "More than 5% of agent requests fail with 5xx.",
                        "description": "Check the agent logs, the database and the LLM provider.",
                    },
                }
            ],
        ),
        _alert_test(
            rules_file,
            [
                {
                    "series": 'ragkeeper_agent_http_requests_total{job="ragkeeper-agent", '
                    'namespace="ragkeeper", status="200"}',
                    "values": "0+10x60",
                }
            ],
            "RagkeeperAgentHighErrorRatio",
            [],
        ),
        _alert_test(
            rules_file,
            [{"series": 'up{job="other", namespace="ragkeeper"}', "values": "1x60"}],
            "RagkeeperOperatorDown",
            [
                {
                    "exp_labels": {"severity": "critical"},
                    "exp_annotations": {
                        "summary": "The ragkeeper operator is not being scraped or is down.",
                        "description": "No DataSource is reconciled and no ingestion CronJob "
                        "is updated while the operator is down.",
                    },
                }
            ],
        ),
        _alert_test(
            rules_file,
            [
                {
                    "series": 'up{job="ragkeeper-operator-metrics", namespace="ragkeeper"}',
                    "values": "1x60",
                }
            ],
            "RagkeeperOperatorDown",
            [],
        ),
        *(
            _alert_test(
                rules_file,
                [
                    {
                        "series": f"ragkeeper_agent_db_pool_connections_in_use{{{agent}}}",
                        "values": in_use,
                    },
                    {
                        "series": f"ragkeeper_agent_db_pool_max_connections{{{agent}}}",
                        "values": "10x60",
                    },
                ],
                "RagkeeperAgentDatabasePoolSaturated",
                fired,
            )
            for in_use, fired in [
                (
                    "10x60",
                    [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "namespace": "ragkeeper",
                                "pod": "agent-0",
                            },
                            "exp_annotations": {
                                "summary": "Agent pod agent-0 uses over 90% of its database "
                                "connections.",
                                "description": "Requests queue for a connection "
                                "(`ragkeeper_agent_db_pool_waits_total`); raise the agent's "
                                "`DB_POOL_MAX_SIZE` within the database's connection limit, "
                                "or scale out.",
                            },
                        }
                    ],
                ),
                ("9x60", []),
            ]
        ),
        # Redis: every replica reports it unreachable for 10 minutes (fires); one replica still
        # reaches it (Redis is up); down for 7 minutes only; no Redis configured (no series).
        *(
            _alert_test(
                rules_file,
                [
                    {"series": f'{metric}{{{agent_job}, pod="{pod}"}}', "values": values}
                    for metric, pod, values in series
                ],
                "RagkeeperAgentRedisDown",
                fired,
            )
            for series, fired in [
                (
                    [
                        ("ragkeeper_agent_redis_up", "agent-0", "1x10 0x50"),
                        ("ragkeeper_agent_redis_up", "agent-1", "1x10 0x50"),
                    ],
                    [
                        {
                            "exp_labels": {"severity": "warning", "namespace": "ragkeeper"},
                            "exp_annotations": {
                                "summary": "No agent replica in ragkeeper reaches Redis.",
                                "description": "The agent answers without its caches and with "
                                "the Postgres rate limit (`ragkeeper_agent_redis_fallbacks_total` "
                                "by component and reason); check the Redis pod, or your Redis and "
                                "the agent's egress to it.",
                            },
                        }
                    ],
                ),
                (
                    [
                        ("ragkeeper_agent_redis_up", "agent-0", "0x60"),
                        ("ragkeeper_agent_redis_up", "agent-1", "1x60"),
                    ],
                    [],
                ),
                ([("ragkeeper_agent_redis_up", "agent-0", "1x32 0x27")], []),
                ([("ragkeeper_agent_http_requests_total", "agent-0", "0+10x60")], []),
            ]
        ),
    ]
    for index, case in enumerate(cases):
        path = tmp_path / f"case{index}.yaml"
        path.write_text(yaml.safe_dump(case))
        run([tool("promtool"), "test", "rules", str(path)])
