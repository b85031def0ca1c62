"""Drift detection as a pure function: what counts as drift, and what must not.

The operator runs this comparison on every CronJob event, including the events
its own patches cause, so "no drift" for the object it just wrote (as the API
server stores it) is what keeps it from patching in a loop.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import jsonpatch
import pytest

from ragkeeper_operator import builders, drift
from ragkeeper_operator.spec import parse_spec
from tests.operator.test_operator_builders import DRIVE_SPEC, datasource, local_spec, settings

CONTAINER = "spec.jobTemplate.spec.template.spec.containers[0]"


def desired(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    body = datasource(spec or local_spec(resources={"requests": {"cpu": "1000m"}}))
    return builders.build_cronjob(body, parse_spec(body["spec"]), settings())


def as_stored(cronjob: dict[str, Any]) -> dict[str, Any]:
    """Roughly what the API server keeps: defaults added, quantities canonical."""
    live = json.loads(json.dumps(cronjob))
    live["metadata"].update(uid="u-1", resourceVersion="7", generation=2, managedFields=[])
    live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    live["status"] = {"lastScheduleTime": "2026-01-01T00:00:00Z"}
    pod = live["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod.update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler")
    pod["containers"][0]["resources"]["requests"]["cpu"] = "1"
    pod["volumes"][0]["emptyDir"]["sizeLimit"] = str(pod["volumes"][0]["emptyDir"]["sizeLimit"])
    return live


def test_stored_copy_of_the_built_cronjob_has_no_drift() -> None:
    want = desired()
    live = as_stored(want)
    cpu = ["spec", "jobTemplate", "spec", "template", "spec", "containers"]

    def requests(cj: dict[str, Any]) -> dict[str, Any]:
        node: Any = cj
        for step in cpu:
            node = node[step]
        return node[0]["resources"]["requests"]  # type: ignore[no-any-return]

    assert (requests(want)["cpu"], requests(live)["cpu"]) == ("1000m", "1")
    assert drift.cronjob_drift(live, want) == []
    assert not drift.cronjob_drifted(as_stored(want), want)


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda cj: cj["spec"].update(schedule="* * * * *"), "spec.schedule"),
        (lambda cj: cj["spec"].update(suspend=True), "spec.suspend"),
        (lambda cj: cj["spec"].pop("concurrencyPolicy"), "spec.concurrencyPolicy"),
        (lambda cj: cj["spec"].update(timeZone="Asia/Tokyo"), "spec.timeZone"),
        (
            lambda cj: cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][
                0
            ].update(image="evil/image:latest"),
            f"{CONTAINER}.image",
        ),
        (
            lambda cj: cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
                "env"
            ].append({"name": "EXTRA", "value": "1"}),
            f"{CONTAINER}.env",
        ),
        (
            lambda cj: cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
                "resources"
            ]["requests"].update(cpu="999m"),
            f"{CONTAINER}.resources.requests.cpu",
        ),
        (
            lambda cj: cj["metadata"]["labels"].pop(builders.MANAGED_BY_LABEL),
            'metadata.labels["app.kubernetes.io/managed-by"]',
        ),
        (lambda cj: cj["metadata"].pop("ownerReferences"), "metadata.ownerReferences"),
    ],
)
def test_hand_edits_are_drift_at_their_path(edit: Any, path: str) -> None:
    want = desired()
    live = as_stored(want)
    edit(live)
    assert drift.cronjob_drift(live, want) == [path]


def test_a_changed_datasource_spec_is_drift_through_the_hash() -> None:
    old = desired(DRIVE_SPEC)
    new = desired({k: v for k, v in DRIVE_SPEC.items() if k != "timeZone"})
    paths = drift.cronjob_drift(as_stored(old), new)
    assert f'metadata.annotations["{builders.SPEC_HASH_ANNOTATION}"]' in paths
    assert "spec.timeZone" in paths


def test_the_patch_restores_owned_fields_and_keeps_foreign_metadata() -> None:
    want = desired()
    live = as_stored(want)
    live["metadata"]["labels"]["team"] = "search"
    live["spec"]["schedule"] = "* * * * *"
    live["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] = "x:1"

    repaired = jsonpatch.apply_patch(copy.deepcopy(live), drift.cronjob_patch(live, want))

    assert drift.cronjob_drift(repaired, want) == []
    assert repaired["metadata"]["labels"]["team"] == "search"
    assert repaired["metadata"]["uid"] == "u-1"
    # A second look at the repaired object finds nothing: no second patch.
    assert drift.cronjob_drift(as_stored(repaired), want) == []


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("500m", Decimal("0.5")),
        ("1", Decimal(1)),
        ("1Gi", Decimal(2**30)),
        ("1.5G", Decimal("1.5e9")),
        ("1e3", Decimal(1000)),
        ("1E", Decimal("1e18")),
        (2, Decimal(2)),
        ("lots", None),
        (True, None),
    ],
)
def test_parse_quantity(value: Any, number: Decimal | None) -> None:
    assert drift.parse_quantity(value) == number


def test_quantities_compare_by_value_only_under_resource_keys() -> None:
    want = desired()
    live = as_stored(want)
    env = live["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0] == {"name": "RUN_MODE", "value": "single"}
    env[0]["value"] = "single "
    assert drift.cronjob_drift(live, want) == [f"{CONTAINER}.env[0].value"]


def test_describe_shortens_long_lists() -> None:
    assert drift.describe(["a", "b"]) == "a, b"
    assert drift.describe(list("abcdef"), limit=2) == "a, b and 4 more"
