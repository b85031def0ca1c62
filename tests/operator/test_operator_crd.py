"""The CRD file: a valid CustomResourceDefinition whose schema accepts the samples and
rejects each invalid example, with the CEL rules evaluated by cel-python."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import celpy.adapter
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "charts" / "ragkeeper" / "crds" / "datasources.ragkeeper.dev.yaml"
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))


def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())  # type: ignore[no-any-return]


def schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def to_json_schema(node: Any) -> Any:
    """openAPIV3Schema -> JSON Schema with the API server's strictness on unknown fields."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if node.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and node.get("type") == "object"
    ):
        result["additionalProperties"] = False
    return result


def cel_rules(node: dict[str, Any], value: Any) -> Iterator[tuple[str, str, Any]]:
    """Every x-kubernetes-validations rule with the value it applies to."""
    for rule in node.get("x-kubernetes-validations", []):
        yield rule["rule"], rule["message"], value
    if isinstance(value, dict):
        for key, child in (node.get("properties") or {}).items():
            if key in value:
                yield from cel_rules(child, value[key])
    if isinstance(value, list) and "items" in node:
        for item in value:
            yield from cel_rules(node["items"], item)


def cel_errors(document: dict[str, Any]) -> list[str]:
    env = celpy.Environment()
    errors = []
    for rule, message, value in cel_rules(schema(), document):
        program = env.program(env.compile(rule))
        if not bool(program.evaluate({"self": celpy.adapter.json_to_cel(value)})):
            errors.append(message)
    return errors


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(to_json_schema(schema()))
    return [error.message for error in validator.iter_errors(document)]


def datasources(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "DataSource"]


def test_crd_is_a_valid_custom_resource_definition() -> None:
    definition = crd()
    kubernetes_validate.validate(definition, "1.37.0", strict=True)
    names = definition["spec"]["names"]
    assert (names["shortNames"], names["categories"]) == (["dsrc"], ["ragkeeper"])
    version = definition["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Type", "Schedule", "Ready", "Last Sync", "Documents", "Age"]
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "conditions"
    ]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_every_spec_field_is_typed_and_documented() -> None:
    def walk(node: dict[str, Any], path: str) -> Iterator[str]:
        for key, child in (node.get("properties") or {}).items():
            here = f"{path}.{key}"
            if "type" not in child and not child.get("x-kubernetes-int-or-string"):
                yield f"{here} has no type"
            if "description" not in child and key not in {"metadata"}:
                yield f"{here} has no description"
            yield from walk(child, here)

    assert list(walk(schema()["properties"]["spec"], "spec")) == []


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_satisfy_schema_and_cel(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert datasources(path), "every sample file holds a DataSource"
    for document in documents:
        if document["kind"] == "DataSource":
            assert schema_errors(document) == []
            assert cel_errors(document) == []
        else:
            kubernetes_validate.validate(document, "1.37.0", strict=True)


EXPECTED = {
    "bad-deletion-policy.yaml": "is not one of ['Delete', 'Retain']",
    "bad-schedule.yaml": "does not match",
    "bad-type.yaml": "is not one of ['local', 'googleDrive']",
    "host-path.yaml": "('hostPath' was unexpected)",
    "both-sources.yaml": "set exactly one of local or googleDrive",
    "missing-source.yaml": "set exactly one of local or googleDrive",
    "name-too-long.yaml": "at most 42 characters",
    "short-deadline.yaml": "less than the minimum of 60",
    "two-volumes.yaml": "has too many properties",
}


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_are_rejected_for_their_reason(path: Path) -> None:
    [document] = datasources(path)
    errors = schema_errors(document) + cel_errors(document)
    assert any(EXPECTED[path.name] in error for error in errors), errors


def test_cel_rule_catches_what_the_schema_cannot() -> None:
    [document] = datasources(ROOT / "manifests" / "samples" / "datasource-local.yaml")
    mixed = copy.deepcopy(document)
    mixed["spec"]["googleDrive"] = {"folderId": "abc", "credentialsSecretRef": {"name": "d"}}
    assert schema_errors(mixed) == []
    assert cel_errors(mixed) == ["set exactly one of local or googleDrive, matching spec.type"]
