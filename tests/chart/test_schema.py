"""values.schema.json is generated from values.yaml, documents every key and rejects bad values.

The bad-values scenarios go through real `helm template`, so they prove helm itself refuses them
(the schema is what a user's typo meets first).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scripts import chart_values
from tests.chart.tools import CHART, helm_template

BAD_VALUES = Path(__file__).parent / "bad-values"


def test_generated_files_are_up_to_date() -> None:
    for path, content in chart_values.generate().items():
        assert path.read_text() == content, f"{path} is stale: run scripts/chart_values.py"


def test_every_value_has_a_comment() -> None:
    text = chart_values.VALUES.read_text()
    data = yaml.safe_load(text)
    keys = chart_values.parse_comments(text, data)
    leaves = [path for path, _ in chart_values._leaves(data)]
    assert len(leaves) > 60
    undocumented = [path for path in leaves if not keys.get(path) or not keys[path].description]
    assert undocumented == []


def test_every_object_in_the_schema_rejects_unknown_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects: list[str] = []

    def walk(node: dict[str, object], path: str) -> None:
        properties = node.get("properties")
        if isinstance(properties, dict):
            if node.get("additionalProperties") is not False:
                open_objects.append(path or "<root>")
            for key, child in properties.items():
                walk(child, f"{path}.{key}" if path else key)

    walk(schema, "")
    assert open_objects == []


def test_missing_comment_is_refused() -> None:
    text = "agent:\n  # -- documented\n  port: 8000\n  undocumented: true\n"
    data = yaml.safe_load(text)
    keys = chart_values.parse_comments(text, data)
    with pytest.raises(chart_values.ValuesDocError, match="agent.undocumented"):
        chart_values.build_schema(data, keys)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("unknown-key.yaml", "additional properties 'replicas' not allowed"),
        ("auth-disabled.yaml", "value must be one of 'jwt', 'jwks'"),
        ("wrong-type.yaml", "got string, want integer"),
        ("both-databases.yaml", "value must be false"),
        ("no-database.yaml", "value must be true"),
        ("jwks-without-url.yaml", "minLength: got 0, want 1"),
        ("bad-namespace.yaml", "does not match pattern"),
        ("negative-grace.yaml", "minimum: got -5, want 0"),
        ("extra-env-auth-mode.yaml", "at '/agent/extraEnv/0/name': 'not' failed"),
        ("extra-env-lowercase.yaml", "at '/agent/extraEnv/0/name': 'not' failed"),
        ("extra-env-database-url.yaml", "at '/agent/extraEnv/0/name': 'not' failed"),
        ("bad-job-cap.yaml", "maxMemory': 'lots' does not match pattern"),
        ("rerank-without-url.yaml", "baseUrl': minLength: got 0, want 1"),
        ("rerank-cohere-without-model.yaml", "model': minLength: got 0, want 1"),
        ("rerank-one-candidate.yaml", "minimum: got 1, want 2"),
        ("rerank-unknown-provider.yaml", "value must be one of 'none', 'tei', 'cohere'"),
        ("extra-env-redis-url.yaml", "at '/agent/extraEnv/0/name': 'not' failed"),
        ("redis-maxmemory-kubernetes-unit.yaml", "maxmemory': '64Mi' does not match pattern"),
        ("redis-image-latest.yaml", "at '/redis/image': 'not' failed"),
        ("redis-no-connections.yaml", "minimum: got 0, want 1"),
        ("attachments-file-too-large.yaml", "at '/agent/attachments/maxFileBytes': maximum"),
        ("extra-env-llm-vision.yaml", "at '/agent/extraEnv/0/name': 'not' failed"),
        ("extra-env-attachment-bytes.yaml", "at '/agent/extraEnv/0/name': 'not' failed"),
    ],
)
def test_helm_rejects_bad_values(values: str, message: str) -> None:
    proc = helm_template(BAD_VALUES / values)
    assert proc.returncode != 0, f"{values} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_defaults_and_every_scenario_pass_the_schema() -> None:
    proc = helm_template()
    assert proc.returncode == 0, proc.stderr
