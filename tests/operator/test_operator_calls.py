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

from tests.operator.conftest import fast_settings, operator_within_rbac
from tests.operator.harness import Cluster, eventually
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
    seen = len(operator_calls(k8s.api))
    while True:
        await asyncio.sleep(QUIET)
        now = len(operator_calls(k8s.api))
        if now == seen:
            return now
        seen = now


def since(k8s: Cluster, start: int) -> list[Call]:
    return operator_calls(k8s.api)[start:]


def report(title: str, counts: Counter[str]) -> dict[str, int]:
    print(f"{title}: {sum(counts.values())} calls")  # noqa: T201 - the breakdown, with -s
    for key, value in sorted(counts.items()):
        print(f"  {value:3d}  {key}")  # noqa: T201
    return dict(counts)


# The counts reached (see docs/operator.md, "API calls per DataSource").
# Before issue 18: 11 for a new DataSource (the 2 DataSource patches are kopf's finalizer and
# its progress/diff-base annotations), 5 reads for a restart.
NEW_DATASOURCE: dict[str, int] = {
    "create batch/cronjobs": 1,
    "create core/events": 2,
    "get batch/cronjobs": 1,
    "get core/persistentvolumeclaims": 1,
    "get core/secrets": 1,
    "get ragkeeper.dev/datasources": 2,
    "patch ragkeeper.dev/datasources": 2,
    "patch ragkeeper.dev/datasources/status": 1,
}
RESYNC: dict[str, int] = {
    "get batch/cronjobs": 1,
    "get core/persistentvolumeclaims": 1,
    "get core/secrets": 1,
    "get ragkeeper.dev/datasources": 2,
}


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
    start = len(operator_calls(k8s.api))
    async with operator_within_rbac(k8s, settings):
        await quiet(k8s)
        per_object, streams = breakdown(since(k8s, start))
    counts = report("restart on a Ready DataSource", per_object)
    report("  (streams: one list and one watch per resource)", streams)
    assert counts == RESYNC
