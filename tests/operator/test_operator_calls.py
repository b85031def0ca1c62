"""How many API calls the operator makes per DataSource (issue 18, item 1), from the request log.

Counted: every request carrying the operator's token (kopf's and our own client's), as
RBAC sees it (``rbac.operator_calls``). Not counted: the long-lived ``watch`` streams and the
initial ``list`` of each watched resource, which kopf opens once per resource (and namespace)
and which cost the same for 1 or 5,000 DataSources; they are reported apart (``streams``).
A scenario ends when the operator has been quiet (no new request) for ``QUIET`` seconds, so
the calls made after Ready=True (kopf's annotations, Events, handlers of the CronJob's
watch events) are counted too.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from ragkeeper_operator.kube import KubeClient, load_configuration
from ragkeeper_operator.metrics import OperatorMetrics
from ragkeeper_operator.reconcile import StatusWriter
from tests.operator.conftest import NAMESPACE, fast_settings, operator_within_rbac
from tests.operator.harness import DS, DS_PATH, MERGE, Cluster, eventually
from tests.operator.rbac import Call, operator_calls
from tests.operator.test_operator_kopf import local_datasource, prepare, ready

QUIET = 0.6
STREAMS = {"watch", "list"}


def _key(call: Call) -> str:
    if not call.is_resource:
        return f"{call.verb} {call.path} (discovery)"
    return f"{call.verb} {call.group or 'core'}/{call.resource}"


def breakdown(calls: list[Call]) -> tuple[Counter[str], Counter[str]]:
    """(per-DataSource calls, list/watch streams), each counted per ``verb group/resource``."""
    per_object = Counter(_key(c) for c in calls if c.is_resource and c.verb not in STREAMS)
    streams = Counter(_key(c) for c in calls if c.verb in STREAMS or not c.is_resource)
    return per_object, streams


async def quiet(k8s: Cluster) -> int:
    """Wait until the operator has made no request for ``QUIET`` seconds; its log length."""
    seen = len(operator_calls(k8s.api.log))
    while True:
        await asyncio.sleep(QUIET)
        now = len(operator_calls(k8s.api.log))
        if now == seen:
            return now
        seen = now


def since(k8s: Cluster, start: int) -> list[Call]:
    return operator_calls(k8s.api.log)[start:]


def report(title: str, counts: Counter[str]) -> dict[str, int]:
    print(f"{title}: {sum(counts.values())} calls")  # noqa: T201 - the breakdown, with -s
    for key, value in sorted(counts.items()):
        print(f"  {value:3d}  {key}")  # noqa: T201
    return dict(counts)


# The counts reached (docs/operator.md, "API calls per DataSource"). Before issue 18: 11 for a
# new DataSource (plus a GET of the CronJob, a GET of the DataSource before its status patch and
# one more when the CronJob's ADDED event came back) and 5 reads for a restart.
NEW_DATASOURCE: dict[str, int] = {
    "create batch/cronjobs": 1,
    # One: the Ready=True transition (CronJobReady); CronJobCreated only when Ready stays.
    "create core/events": 1,
    # One read per object and DEPENDENCY_CACHE_SECONDS, shared by every DataSource that needs
    # it (watching Secrets would hold every Secret of the watched namespaces).
    "get core/persistentvolumeclaims": 1,
    "get core/secrets": 1,
    # kopf's finalizer, then its progress/diff-base annotations after the handler: kopf
    # writes these itself; merging them with the status patch means leaving kopf's
    # create/update handlers for a generation-driven event handler (left for later).
    "patch ragkeeper.dev/datasources": 2,
    # One status patch, with the watched body's resourceVersion as its precondition.
    "patch ragkeeper.dev/datasources/status": 1,
}
# Nothing at all: Ready=True for the current generation and a CronJob that matches the spec
# (reconcile.in_force) say the dependencies were checked for this spec; no read, no write.
RESYNC: dict[str, int] = {}


async def test_calls_for_a_new_datasource_until_ready(k8s: Cluster) -> None:
    await prepare(k8s)
    async with operator_within_rbac(k8s, fast_settings(k8s.kubeconfig)):
        start = await quiet(k8s)
        await k8s.create_datasource(local_datasource())
        await eventually(ready(k8s, "team-docs", "True", "CronJobReady"))
        await quiet(k8s)
        per_object, streams = breakdown(since(k8s, start))
    counts = report("new DataSource until Ready=True", per_object)
    report("  (streams opened meanwhile)", streams)
    assert counts == NEW_DATASOURCE


async def test_restart_on_ready_datasources_writes_nothing(k8s: Cluster) -> None:
    await prepare(k8s)
    settings = fast_settings(k8s.kubeconfig)
    async with operator_within_rbac(k8s, settings):
        await k8s.create_datasource(local_datasource())
        await eventually(ready(k8s, "team-docs", "True", "CronJobReady"))
        await quiet(k8s)
    start = len(operator_calls(k8s.api.log))
    async with operator_within_rbac(k8s, settings):
        await quiet(k8s)
        per_object, streams = breakdown(since(k8s, start))
    counts = report("restart on a Ready DataSource", per_object)
    report("  (streams: one list and one watch per resource)", streams)
    assert counts == RESYNC


async def test_a_status_write_on_a_stale_body_reads_and_keeps_the_other_write(k8s: Cluster) -> None:
    """The precondition path: someone wrote the status after the watched body; no update lost."""
    created = await k8s.create_datasource(local_datasource())
    await k8s.call(
        "PATCH",
        DS_PATH.format(ns=NAMESPACE) + "/team-docs/status",
        {"status": {"lastScheduleTime": "2026-01-01T00:00:00Z"}},
        headers=MERGE,
    )
    kube = KubeClient(await load_configuration(str(k8s.kubeconfig)))
    try:
        writer = StatusWriter(kube, OperatorMetrics())
        start = len(operator_calls(k8s.api.log))
        change = await writer.update(
            NAMESPACE, "team-docs", lambda current, _: {**current, "lastSyncRequest": "x"}, created
        )
        assert change is not None
        assert change.before == {"lastScheduleTime": "2026-01-01T00:00:00Z"}
        # A 409 on the precondition, then a read and the patch.
        verbs = [call.verb for call in since(k8s, start)]
        assert verbs == ["patch", "get", "patch"]
        # Nothing to change in what the watch holds: no call at all.
        fresh = k8s.obj(DS, NAMESPACE, "team-docs")
        assert await writer.update(NAMESPACE, "team-docs", lambda c, _: c, fresh) is None
        assert len(since(k8s, start)) == len(verbs)
    finally:
        await kube.close()
    assert k8s.obj(DS, NAMESPACE, "team-docs")["status"] == {  # type: ignore[index]
        "lastScheduleTime": "2026-01-01T00:00:00Z",
        "lastSyncRequest": "x",
    }
