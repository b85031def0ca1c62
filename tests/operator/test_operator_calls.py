"""How many API calls the operator makes per DataSource (issue 18, item 1), from the request log.

Counted: every request carrying the operator's token (kopf's and our own client's), as
RBAC sees it (``rbac.operator_calls``). Not counted: the long-lived ``watch`` streams and the
initial ``list`` of each watched resource, which kopf opens once per resource (and namespace)
and which cost the same for 1 or 5,000 DataSources; they are reported apart (``streams``).
A scenario ends when the operator has been quiet (no new request) for ``QUIET`` seconds, so
the calls made after Ready=True (kopf's status patch, Events, handlers of the CronJob's
watch events) are counted too.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import kopf
import pytest

from ragkeeper_operator import reconcile
from ragkeeper_operator.handlers import DIFFBASE_KEY, PREFIX, StatusDiffBase
from ragkeeper_operator.kube import KubeClient, load_configuration
from ragkeeper_operator.metrics import OperatorMetrics
from ragkeeper_operator.reconcile import StatusWriter
from ragkeeper_operator.settings import OperatorSettings
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


# The counts reached (docs/operator.md, "API calls per DataSource"): 6 for a new DataSource
# alone, 4 each in a burst (the Secret and PVC reads are shared by the DataSources of a
# namespace).
NEW_DATASOURCE: dict[str, int] = {
    "create batch/cronjobs": 1,
    # One: the Ready=True transition (CronJobReady); CronJobCreated only when Ready stays.
    "create core/events": 1,
    # One read per object and DEPENDENCY_CACHE_SECONDS, shared by every DataSource that needs
    # it (watching Secrets would hold every Secret of the watched namespaces).
    "get core/persistentvolumeclaims": 1,
    "get core/secrets": 1,
    # kopf's finalizer, which kopf adds in a cycle of its own before any handler runs (so a
    # DataSource deleted at once still gets its purge).
    "patch ragkeeper.dev/datasources": 1,
    # One JSON Patch of the status after the handler (kopf's, testing the watched body's
    # resourceVersion first): Ready=True and kopf's diff-base (status.kopf) together.
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


async def one_ready_datasource(k8s: Cluster, settings: OperatorSettings) -> None:
    """An operator run that makes one DataSource Ready, until it is quiet."""
    await prepare(k8s)
    async with operator_within_rbac(k8s, settings):
        await k8s.create_datasource(local_datasource())
        await eventually(ready(k8s, "team-docs", "True", "CronJobReady"))
        await quiet(k8s)


async def restart(k8s: Cluster, settings: OperatorSettings) -> tuple[Counter[str], Counter[str]]:
    """The calls of an operator started again, until it is quiet (``breakdown``)."""
    start = len(operator_calls(k8s.api.log))
    async with operator_within_rbac(k8s, settings):
        await quiet(k8s)
        return breakdown(since(k8s, start))


async def test_restart_on_ready_datasources_writes_nothing(k8s: Cluster) -> None:
    settings = fast_settings(k8s.kubeconfig)
    await one_ready_datasource(k8s, settings)
    per_object, streams = await restart(k8s, settings)
    counts = report("restart on a Ready DataSource", per_object)
    report("  (streams: one list and one watch per resource)", streams)
    assert counts == RESYNC


async def test_restart_after_the_annotation_diff_base_writes_nothing(k8s: Cluster) -> None:
    """A DataSource last handled when kopf kept its diff-base in an annotation (an operator
    before the upgrade): read from there, so it is resumed, not created again; no call."""
    settings = fast_settings(k8s.kubeconfig)
    await one_ready_datasource(k8s, settings)
    body = kopf.Body(k8s.obj(DS, NAMESPACE, "team-docs") or {})
    essence = StatusDiffBase().fetch(body=body)
    assert essence is not None
    # What the operator wrote then: the annotation, with kopf's marker of the prefix.
    legacy = kopf.Patch()
    kopf.AnnotationsDiffBaseStorage(prefix=PREFIX, key=DIFFBASE_KEY).store(
        body=body, patch=legacy, essence=essence
    )
    path = DS_PATH.format(ns=NAMESPACE) + "/team-docs"
    await k8s.call("PATCH", path, dict(legacy), headers=MERGE)
    await k8s.call("PATCH", path + "/status", {"status": {"kopf": None}}, headers=MERGE)
    moved = k8s.obj(DS, NAMESPACE, "team-docs") or {}
    assert "kopf" not in moved["status"]
    assert f"{PREFIX}/{DIFFBASE_KEY}" in moved["metadata"]["annotations"]
    per_object, _ = await restart(k8s, settings)
    assert report("restart after the upgrade", per_object) == RESYNC


async def test_a_write_before_kopfs_status_patch_is_kept(
    k8s: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ready=True goes in kopf's status JSON Patch, which tests the watched resourceVersion:
    a status write made meanwhile (a run recorded, a schedule copied) fails that test (422),
    and kopf applies it to the next body, keeping that write."""
    await prepare(k8s)
    ensure = reconcile.ensure_cronjob
    written: list[str] = []
    calls: list[str] = []

    async def ensure_then_write(rt: reconcile.Runtime, *args: Any) -> str:
        action = await ensure(rt, *args)
        calls.append(action)
        if not written:  # on the operator's loop, through its client, as a handler would
            written.append(action)
            stamp = {"status": {"lastScheduleTime": "2026-01-01T00:00:00Z"}}
            await rt.api.patch(*reconcile.DS, NAMESPACE, "team-docs", stamp, subresource="status")
        return action

    monkeypatch.setattr(reconcile, "ensure_cronjob", ensure_then_write)
    async with operator_within_rbac(k8s, fast_settings(k8s.kubeconfig)):
        start = len(operator_calls(k8s.api.log))
        await k8s.create_datasource(local_datasource())
        await eventually(ready(k8s, "team-docs", "True", "CronJobReady"))
        await quiet(k8s)
        per_object, _ = breakdown(since(k8s, start))
    report("a status write before kopf's patch", per_object)
    # The handler ran once; kopf applied what it left in the patch to the next body, without
    # running it again: one Event.
    assert written == calls == ["created"]
    assert per_object["create core/events"] == 1
    current = k8s.obj(DS, NAMESPACE, "team-docs") or {}
    assert current["status"]["lastScheduleTime"] == "2026-01-01T00:00:00Z"
    assert "last-handled-configuration" in current["status"]["kopf"]
    # That write, kopf's patch refused (422), and kopf's patch on the next body.
    assert per_object["patch ragkeeper.dev/datasources/status"] == 3


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
