"""The chart's RBAC for the operator is what the operator uses: nothing missing, nothing spare.

Every operator scenario (the ``operator`` fixture and ``operator_within_rbac`` in
conftest) already fails when the operator made a call the chart's rules for its
mode do not allow. Here one scenario doing everything the operator does (create
with a missing Secret, an invalid spec, a spec change, suspend, a sync request, a
finished run, delete with purge) runs in both modes of the chart, cluster-wide
and ``WATCH_NAMESPACES``; afterwards every call must be allowed, and every
granted verb must have been used, or carry a ``# needed:`` comment in the
template saying why (``rbac.justified_verbs``).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from ragkeeper_operator import builders
from tests.operator.conftest import NAMESPACE, fast_settings, operator_within_rbac
from tests.operator.harness import DS, Cluster, eventually
from tests.operator.rbac import (
    CLUSTER_WIDE,
    NAMESPACED,
    Grant,
    Rule,
    RuleSet,
    chart_rbac,
    justified_verbs,
    operator_calls,
    parse_call,
)
from tests.operator.test_operator_kopf import local_datasource, ready, stats


async def everything_the_operator_does(k8s: Cluster) -> None:
    await k8s.create_pvc(NAMESPACE, "docs")
    await k8s.create_datasource(local_datasource())
    await eventually(ready(k8s, "team-docs", "False", "SecretNotFound"))
    await k8s.create_secret(NAMESPACE, "ragkeeper-database", ["DATABASE_URL"])
    await eventually(ready(k8s, "team-docs", "True", "CronJobReady"))
    await k8s.create_datasource(local_datasource("broken", schedule="61 * * * *"))
    await eventually(ready(k8s, "broken", "False", "InvalidSchedule"))

    await k8s.patch_datasource(NAMESPACE, "team-docs", {"spec": {"schedule": "0 3 * * *"}})
    await k8s.patch_datasource(NAMESPACE, "team-docs", {"spec": {"suspend": True}})
    await eventually(ready(k8s, "team-docs", "True", "Suspended"))

    key = builders.SYNC_REQUEST_ANNOTATION
    annotations = {"metadata": {"annotations": {key: "2026-01-01T12:00:00Z"}}}
    await k8s.patch_datasource(NAMESPACE, "team-docs", annotations)
    job = (await eventually(lambda: k8s.all("batch/v1/jobs", NAMESPACE)))[0]
    await k8s.finish_pod(job, exit_code=0, message=stats())
    await eventually(
        lambda: (k8s.obj(DS, NAMESPACE, "team-docs") or {}).get("status", {}).get("lastRun")
    )

    await k8s.delete_datasource(NAMESPACE, "team-docs")
    purge = await eventually(
        lambda: [j for j in k8s.all("batch/v1/jobs", NAMESPACE) if "purge" in j["metadata"]["name"]]
    )
    await k8s.complete_job(NAMESPACE, purge[0]["metadata"]["name"])
    await eventually(lambda: k8s.obj(DS, NAMESPACE, "team-docs") is None)


@pytest.mark.parametrize(
    ("mode", "watch"), [(CLUSTER_WIDE, ()), (NAMESPACED, (NAMESPACE,))], ids=["clusterwide", "ns"]
)
async def test_the_operator_uses_exactly_the_verbs_the_chart_grants(
    k8s: Cluster, mode: str, watch: tuple[str, ...]
) -> None:
    settings = fast_settings(k8s.kubeconfig, watch_namespaces=watch)
    async with operator_within_rbac(k8s, settings):  # fails here on a call not granted
        await everything_the_operator_does(k8s)

    calls = operator_calls(k8s.api.log)
    rules = chart_rbac(mode)
    unused = rules.unused(calls, justified_verbs())
    assert not unused, (
        "granted but never used, and no '# needed: <verb> -- <why>' comment on the rule in "
        "charts/ragkeeper/templates/operator-rbac.yaml:\n  " + "\n  ".join(unused) + f"\n{rules}"
    )
    if mode == NAMESPACED:
        cluster_scoped = sorted({str(c) for c in calls if c.is_resource and not c.namespace})
        assert not cluster_scoped, f"namespaced, yet called outside a namespace: {cluster_scoped}"


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        ("GET /apis/batch/v1/namespaces/docs/cronjobs/x", "get batch cronjobs docs x"),
        ("GET /apis/batch/v1/namespaces/docs/cronjobs", "list batch cronjobs docs -"),
        ("GET /apis/batch/v1/cronjobs?watch=true", "watch batch cronjobs - -"),
        ("GET /api/v1/watch/namespaces/docs/pods", "watch core pods docs -"),
        ("POST /api/v1/namespaces/docs/events", "create core events docs -"),
        ("PUT /api/v1/namespaces/docs/secrets/s", "update core secrets docs s"),
        (
            "PATCH /apis/ragkeeper.dev/v1alpha1/namespaces/docs/datasources/d/status",
            "patch ragkeeper.dev datasources/status docs d",
        ),
        ("DELETE /apis/batch/v1/namespaces/docs/jobs/j", "delete batch jobs docs j"),
        ("DELETE /apis/batch/v1/namespaces/docs/jobs", "deletecollection batch jobs docs -"),
        ("GET /api/v1/namespaces", "list core namespaces - -"),
        ("GET /api/v1/namespaces/docs", "get core namespaces docs docs"),
        ("GET /apis/batch/v1", "get - - - -"),
    ],
)
def test_a_request_becomes_the_verb_rbac_checks(request_line: str, expected: str) -> None:
    method, target = request_line.split(" ")
    path, _, query = target.partition("?")
    call = parse_call(method, path, dict(parse_qsl(query)))
    group = call.group or ("core" if call.is_resource else "")
    fields = (call.verb, group, call.resource, call.namespace, call.name)
    assert " ".join(field or "-" for field in fields) == expected
    assert call.path == path


TEMPLATE = """
{{- define "rules" -}}
# ragkeeper operator: purge Jobs.
# needed: delete, list -- a made-up reason
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "delete", "list"]
{{- end }}
rules:
  # kopf framework: events.
  - apiGroups: [""]
    resources: ["events"]
    verbs: ["create"]
"""


def test_needed_comments_justify_the_verbs_they_name() -> None:
    assert justified_verbs(TEMPLATE) == {
        ("batch", "jobs", "delete"): "a made-up reason",
        ("batch", "jobs", "list"): "a made-up reason",
    }
    with pytest.raises(AssertionError, match="names patch, which the rule lacks"):
        justified_verbs(TEMPLATE.replace("delete, list", "patch"))
    with pytest.raises(AssertionError, match="is not '# needed: <verb>"):
        justified_verbs(TEMPLATE.replace(" -- a made-up reason", ""))


def test_unused_and_denied_are_reported_per_rule() -> None:
    rule = Rule.from_manifest(
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "delete"]}
    )
    rules = RuleSet("test", (Grant("Role r in namespace docs", "docs", (rule,)),))
    get = parse_call("GET", "/apis/batch/v1/namespaces/docs/jobs/j", {})
    elsewhere = parse_call("GET", "/apis/batch/v1/namespaces/other/jobs/j", {})
    create = parse_call("POST", "/apis/batch/v1/namespaces/docs/jobs", {})
    assert rules.denied([get, elsewhere, create]) == sorted([elsewhere, create])
    assert rules.unused([get], {}) == ["Role r in namespace docs: delete batch/jobs"]
    assert rules.unused([get], {("batch", "jobs", "delete"): "why"}) == []
    assert rules.unused([elsewhere], {}) == [
        "Role r in namespace docs: delete batch/jobs",
        "Role r in namespace docs: get batch/jobs",
    ]


def test_chart_modes_bind_the_rules_where_the_operator_works() -> None:
    cluster, namespaced = chart_rbac(CLUSTER_WIDE), chart_rbac(NAMESPACED)
    crd_watch = parse_call(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", {"watch": "true"}
    )
    other = parse_call("GET", f"/apis/batch/v1/namespaces/not-{NAMESPACE}/cronjobs/x", {})
    assert cluster.allows(crd_watch) and cluster.allows(other)
    assert not namespaced.allows(crd_watch) and not namespaced.allows(other)
    assert namespaced.allows(parse_call("GET", "/apis", {})), "discovery is for everyone"
