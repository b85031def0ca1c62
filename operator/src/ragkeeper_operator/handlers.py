"""kopf handlers: thin glue from watch events to ``reconcile`` and kopf's retries.

Importing this module registers the handlers in kopf's default registry.
Shared state reaches handlers through ``memo.runtime`` (a ``Runtime``), which
``__main__`` (or a test) creates before starting kopf.

Error policy: an invalid spec raises ``kopf.PermanentError`` (no retry until
the spec changes); a missing Secret/PVC or an API error raises
``kopf.TemporaryError`` with exponential backoff, so the DataSource heals on
its own when the dependency appears. Nothing here lets an exception escape in
a way that would stop the operator.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import timedelta
from typing import Any

import kopf

from ragkeeper_operator import builders, reconcile
from ragkeeper_operator.kube import KubeClient, KubeError, connection_info, load_configuration
from ragkeeper_operator.peering import ensure_peering
from ragkeeper_operator.reconcile import DS, Runtime
from ragkeeper_operator.settings import OperatorSettings
from ragkeeper_operator.spec import DependencyMissing, InvalidSpec

logger = logging.getLogger(__name__)

# kopf ignores annotations under its own storage prefix, so it must differ from the
# user-facing ragkeeper.dev/ annotations (sync-requested-at).
PREFIX = "operator.ragkeeper.dev"
FINALIZER = "ragkeeper.dev/purge"
MANAGED = {builders.MANAGED_BY_LABEL: builders.MANAGED_BY}
OWNED_PODS: dict[str, Any] = {
    **MANAGED,
    builders.DATASOURCE_LABEL: kopf.PRESENT,
}
SYNC_FIELD = ("metadata", "annotations", builders.SYNC_REQUEST_ANNOTATION)
DIFFBASE_KEY = "last-handled-configuration"


class StatusDiffBase(kopf.StatusDiffBaseStorage):
    """kopf's diff-base in ``status.kopf.last-handled-configuration``, written in kopf's status
    patch at the end of the handler (the one that also carries the DataSource's status).

    kopf writes a status diff-base as a merge patch and the handler's status as a JSON Patch
    (a ``test`` of the resourceVersion first): two calls. Stored as a transformation instead,
    both go in that one JSON Patch. A DataSource last handled by an operator that kept the
    diff-base in the annotation ``operator.ragkeeper.dev/last-handled-configuration`` is read
    from there until its next change writes the status one: an unchanged DataSource stays
    unchanged (no write) after the upgrade.
    """

    def __init__(self) -> None:
        super().__init__(name="kopf")
        self._annotation = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX, key=DIFFBASE_KEY)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return super().fetch(body=body) or self._annotation.fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        encoded = json.dumps(essence, separators=(",", ":"))
        *parents, key = self.field

        def put(raw: Any) -> None:
            node = raw
            for name in parents:
                if not isinstance(node.get(name), dict):
                    node[name] = {}
                node = node[name]
            node[key] = encoded

        patch.fns.append(put)


class Progress(kopf.AnnotationsProgressStorage):
    """kopf's per-handler records, annotations under ``PREFIX`` while a handler retries.

    kopf adds its marker annotation (``<prefix>/kopf-managed``, which tells other kopf-based
    operators to ignore the prefix) with the first record it stores, even when that record is
    purged in the same cycle because the handler succeeded at once: the marker alone would
    cost a patch of the DataSource. It is dropped then, and kept with any record that stays.
    """

    MARKER = f"{PREFIX}/kopf-managed"

    def purge(self, *, key: kopf.HandlerId, body: kopf.Body, patch: kopf.Patch) -> None:
        super().purge(key=key, body=body, patch=patch)
        metadata = patch.get("metadata")
        if not isinstance(metadata, dict):
            return
        annotations = metadata.get("annotations")
        if not isinstance(annotations, dict) or self.MARKER not in annotations:
            return
        if any(
            name != self.MARKER and name.startswith(f"{PREFIX}/") and value is not None
            for name, value in annotations.items()
        ):
            return
        del annotations[self.MARKER]
        if not annotations:
            del metadata["annotations"]
        if not metadata:
            del patch["metadata"]


def _runtime(memo: Any) -> Runtime:
    """The shared ``Runtime``."""
    runtime = memo.get("runtime") if hasattr(memo, "get") else None
    if not isinstance(runtime, Runtime):
        raise kopf.PermanentError("the operator was started without memo.runtime")
    return runtime


def configure_kopf(settings: OperatorSettings) -> kopf.OperatorSettings:
    """kopf settings: annotation prefix, finalizer, events, watch timeouts, scanning by mode."""
    config = kopf.OperatorSettings()
    config.persistence.finalizer = FINALIZER
    config.persistence.progress_storage = Progress(prefix=PREFIX)
    config.persistence.diffbase_storage = StatusDiffBase()
    config.posting.reporting_component = builders.MANAGED_BY
    config.posting.event_name_prefix = "ragkeeper-"
    config.posting.level = logging.INFO
    config.watching.server_timeout = settings.watch_server_timeout_seconds
    config.watching.client_timeout = settings.watch_server_timeout_seconds + 60
    config.watching.connect_timeout = 30
    config.networking.request_timeout = 60
    config.networking.connect_timeout = 30
    # Watch only the Pods, Jobs and CronJobs we made (server-side label selectors).
    for resource in (("v1", "pods"), ("batch", "v1", "cronjobs")):
        config.watching.label_selectors[resource] = builders.MANAGED_SELECTOR
    # With WATCH_NAMESPACES the operator holds only a Role in each listed namespace: kopf then
    # serves exactly those namespaces and makes no cluster-scoped call (it would list/watch
    # Namespaces and CRDs, get 403 and log warnings). Cluster-wide, kopf follows CRD changes.
    config.scanning.disabled = not settings.clusterwide
    if settings.peering_name:
        config.peering.name = settings.peering_name
        config.peering.mandatory = True
        # kopf pauses every operator that sees a live peer of the same priority, so replicas
        # of one Deployment draw distinct priorities: the highest live one works, the rest
        # stand by until its keep-alive is older than its lifetime (docs/operator.md, HA).
        config.peering.priority = (
            settings.peering_priority
            if settings.peering_priority is not None
            else secrets.randbelow(2**31 - 1) + 1
        )
        config.peering.lifetime = settings.peering_lifetime_seconds
    else:
        config.peering.standalone = True
    return config


@kopf.on.startup()
async def connect(memo: kopf.Memo, **_: Any) -> None:
    """Open the API client once; handlers share it through ``memo.runtime``. List the
    DataSources and owned CronJobs once (``watched.py``); the watches keep them current. With
    ``PEERING_NAME``, create the peering object kopf needs but never creates (``peering.py``)."""
    runtime = _runtime(memo)
    if runtime.configuration is None:
        runtime.configuration = await load_configuration(runtime.settings.kubeconfig)
    if runtime.kube is None:
        runtime.attach(KubeClient(runtime.configuration))
    await ensure_peering(runtime.api, runtime.settings)
    await runtime.prime()


@kopf.on.login()
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """Give kopf the same credentials our own client uses."""
    runtime = _runtime(memo)
    if runtime.configuration is None:
        runtime.configuration = await load_configuration(runtime.settings.kubeconfig)
    return await connection_info(runtime.configuration)


@kopf.on.cleanup()
async def disconnect(memo: kopf.Memo, **_: Any) -> None:
    runtime = _runtime(memo)
    if runtime.kube is not None:
        await runtime.kube.close()


@kopf.on.resume(*DS)
@kopf.on.create(*DS)
@kopf.on.update(*DS, field="spec")
async def reconcile_datasource(
    body: kopf.Body, patch: kopf.Patch, retry: int, memo: kopf.Memo, **_: Any
) -> None:
    """Converge the DataSource's CronJob; record Ready and retry what can heal.

    ``Ready=True`` goes into kopf's ``patch``: kopf applies it with its diff-base in one
    status patch after this handler.
    """
    runtime = _runtime(memo)
    metrics = runtime.metrics
    with metrics.reconciling():
        try:
            spec = await reconcile.converge(runtime, body, patch)
        except InvalidSpec as exc:
            metrics.reconciliations.labels(result="invalid").inc()
            raise kopf.PermanentError(f"{exc.reason}: {exc.message}") from exc
        except DependencyMissing as exc:
            metrics.reconciliations.labels(result="waiting").inc()
            delay = runtime.settings.retry_delay(retry)
            raise kopf.TemporaryError(f"{exc.reason}: {exc.message}", delay=delay) from exc
        except KubeError as exc:
            metrics.reconciliations.labels(result="error").inc()
            raise kopf.TemporaryError(str(exc), delay=runtime.settings.retry_delay(retry)) from exc
    metrics.reconciliations.labels(result="success").inc()
    meta = body.metadata
    logger.debug("reconciled %s/%s (suspend=%s)", meta.namespace, meta.name, spec.suspend)


@kopf.on.field(*DS, field=SYNC_FIELD)
async def sync_requested(body: kopf.Body, new: Any, retry: int, memo: kopf.Memo, **_: Any) -> None:
    """``ragkeeper.dev/sync-requested-at`` set or changed: run one Job now.

    A spec the job policy refuses refuses the request (a ``SyncRefused`` Event); a new
    value is needed once the DataSource is fixed.
    """
    if not new:
        return
    runtime = _runtime(memo)
    try:
        job = await reconcile.request_sync(runtime, body, str(new))
    except InvalidSpec as exc:
        raise kopf.PermanentError(f"{exc.reason}: {exc.message}") from exc
    except (DependencyMissing, KubeError) as exc:
        raise kopf.TemporaryError(str(exc), delay=runtime.settings.retry_delay(retry)) from exc
    if job:
        meta = body.metadata
        logger.info("sync requested for %s/%s: Job %s", meta.namespace, meta.name, job)


def _purges(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("deletionPolicy", "Delete") == "Delete")


@kopf.on.delete(*DS, when=_purges)
async def purge_datasource(
    body: kopf.Body, runtime: timedelta, retry: int, memo: kopf.Memo, **_: Any
) -> None:
    """``deletionPolicy: Delete``: run the purge Job, then let the finalizer go."""
    rt = _runtime(memo)
    try:
        done = await reconcile.purge_step(rt, body, runtime.total_seconds())
    except KubeError as exc:
        raise kopf.TemporaryError(str(exc), delay=rt.settings.retry_delay(retry)) from exc
    if not done:
        raise kopf.TemporaryError("waiting for the purge Job", delay=rt.settings.purge_poll_seconds)


@kopf.on.event(*DS)
async def datasource_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """Keep the watched DataSources current; forget the metrics of one that is gone."""
    runtime = _runtime(memo)
    if type == "DELETED":
        runtime.datasources.drop(namespace or "", name)
        if namespace:
            runtime.metrics.forget(namespace, name)
        return
    runtime.datasources.put(body)


@kopf.on.event("v1", "pods", labels=OWNED_PODS)
async def pod_event(
    type: str,
    body: kopf.Body,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A sync Pod finished: its termination message becomes the DataSource's lastRun."""
    if type == "DELETED":
        return
    datasource = labels.get(builders.DATASOURCE_LABEL)
    if not datasource or not namespace:
        return
    try:
        await reconcile.record_run(_runtime(memo), namespace, datasource, body)
    except KubeError as exc:
        pod = body.metadata.name
        logger.warning("could not record the run of Pod %s/%s: %s", namespace, pod, exc)


@kopf.on.event("batch", "v1", "cronjobs", labels=MANAGED)
async def cronjob_event(
    type: str,
    body: kopf.Body,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Keep the watched CronJobs current; mirror ``lastScheduleTime``; re-create the
    CronJob if someone deleted it."""
    rt = _runtime(memo)
    if type == "DELETED":
        rt.cronjobs.drop(namespace or "", body.metadata.name or "")
    else:
        rt.cronjobs.put(body)
    datasource = labels.get(builders.DATASOURCE_LABEL)
    if not datasource or not namespace:
        return
    try:
        if type != "DELETED":
            await reconcile.record_schedule(rt, namespace, datasource, body)
            return
        rt.repaired.pop((namespace, body.metadata.name or ""), None)
        owner = await rt.datasource(namespace, datasource)
        if owner is not None and not owner.get("metadata", {}).get("deletionTimestamp"):
            logger.info("CronJob of %s/%s was deleted; re-creating it", namespace, datasource)
            await reconcile.converge(rt, owner)
    except (KubeError, InvalidSpec, DependencyMissing) as exc:
        logger.warning("CronJob event for %s/%s not handled: %s", namespace, datasource, exc)


@kopf.on.event("batch", "v1", "cronjobs", labels=MANAGED)
async def cronjob_drift(
    type: str, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """Someone edited an owned CronJob: patch it back and post ``CronJobDriftRepaired``.

    The operator's own patches come back here too; they compare equal and do nothing.
    """
    if type == "DELETED" or not namespace:
        return
    try:
        await reconcile.repair_drift(_runtime(memo), namespace, body)
    except (KubeError, DependencyMissing) as exc:
        name = body.metadata.name
        logger.warning("drift of CronJob %s/%s not repaired: %s", namespace, name, exc)
