"""operator.replicas: one replica renders as before; two or more get kopf peering.

With replicas >= 2 the chart sets PEERING_NAME (the release's operator name), the peer
identity (POD_ID, the pod name) and the peering lifetime, ships kopf's peering CRD for the mode
(ClusterKopfPeering cluster-wide, KopfPeering with watched namespaces), grants exactly the
peering verbs kopf and the operator use (patch limited to the release's object) and a
PodDisruptionBudget with minAvailable 1. The rendered env, read into OperatorSettings, gives
the peering name and lifetime. The schema refuses fewer than one replica.
"""

from __future__ import annotations

from typing import Any

import pytest

from ragkeeper_operator.peering import peering_objects
from ragkeeper_operator.settings import OperatorSettings
from tests.chart.tools import CHART, CI_VALUES, by_kind, helm_template, named, render

HA = CHART / "ci" / "ha-values.yaml"
NAME = "ragkeeper-operator"


def _operator_env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container = named(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][
        0
    ]
    return {item["name"]: item for item in container["env"]}


def _peering_rules(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [
        rule
        for role in by_kind(objects, kind)
        for rule in role["rules"]
        if rule["apiGroups"] == ["kopf.dev"]
    ]


def _expected_rules(plural: str) -> list[dict[str, Any]]:
    """list/watch/create on the kind; patch on the release's peering object only."""
    return [
        {"apiGroups": ["kopf.dev"], "resources": [plural], "verbs": ["list", "watch", "create"]},
        {
            "apiGroups": ["kopf.dev"],
            "resources": [plural],
            "resourceNames": [NAME],
            "verbs": ["patch"],
        },
    ]


@pytest.mark.parametrize("values", [p for p in CI_VALUES if p != HA], ids=lambda p: p.stem)
def test_one_replica_has_no_peering_and_no_pdb(values: Any) -> None:
    objects = render(values)
    deployment = named(objects, "Deployment", "-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not {"PEERING_NAME", "POD_ID", "PEERING_LIFETIME_SECONDS"} & set(_operator_env(objects))
    assert not [p for p in by_kind(objects, "PodDisruptionBudget") if p["metadata"]["name"] == NAME]
    assert not [c for c in by_kind(objects, "CustomResourceDefinition") if "kopf" in str(c)]
    assert not _peering_rules(objects, "ClusterRole") + _peering_rules(objects, "Role")


def test_two_replicas_cluster_wide() -> None:
    objects = render(HA)
    deployment = named(objects, "Deployment", "-operator")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    env = _operator_env(objects)
    assert env["PEERING_NAME"]["value"] == NAME
    assert env["PEERING_LIFETIME_SECONDS"]["value"] == "30"
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}

    pdb = named(objects, "PodDisruptionBudget", "-operator")
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]

    (crd,) = by_kind(objects, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "clusterkopfpeerings.kopf.dev"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["kind"] == "ClusterKopfPeering"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    assert _peering_rules(objects, "ClusterRole") == _expected_rules("clusterkopfpeerings")


def test_two_replicas_with_watched_namespaces() -> None:
    namespaced = CHART / "ci" / "namespaced-values.yaml"
    objects = render(namespaced, sets=["operator.replicas=3"])
    assert named(objects, "Deployment", "-operator")["spec"]["replicas"] == 3
    (crd,) = by_kind(objects, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "kopfpeerings.kopf.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert _peering_rules(objects, "ClusterRole") == []
    roles = [r for r in by_kind(objects, "Role") if r["metadata"]["name"] == NAME]
    assert {r["metadata"]["namespace"] for r in roles} == {"team-a", "team-b"}
    for role in roles:
        assert [r for r in role["rules"] if r["apiGroups"] == ["kopf.dev"]] == _expected_rules(
            "kopfpeerings"
        )


def test_peering_crd_can_be_left_to_the_cluster() -> None:
    objects = render(HA, sets=["operator.peeringCRD=false"])
    assert by_kind(objects, "CustomResourceDefinition") == []
    assert "PEERING_NAME" in _operator_env(objects)


def test_rendered_env_gives_the_operator_its_peering(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, item in _operator_env(render(HA)).items():
        if "value" in item:
            monkeypatch.setenv(name, item["value"])
    settings = OperatorSettings()
    assert settings.peering_name == NAME
    assert settings.peering_lifetime_seconds == 30
    assert settings.peering_priority is None  # drawn at random per process
    # The object the operator creates at start is the one the RBAC lets it patch.
    ((path, body),) = peering_objects(settings)
    assert path == "/apis/kopf.dev/v1/clusterkopfpeerings"
    assert body["metadata"]["name"] == NAME


@pytest.mark.parametrize("replicas", ["0", "-1"])
def test_schema_refuses_fewer_than_one_replica(replicas: str) -> None:
    proc = helm_template(sets=[f"operator.replicas={replicas}"])
    assert proc.returncode != 0
    assert "replicas" in proc.stderr
