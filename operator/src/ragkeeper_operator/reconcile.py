"""What the operator does for one DataSource, independent of kopf's plumbing.

``converge`` checks a DataSource's spec against the job policy (``admit``) and
its dependencies, and creates or patches its CronJob (or, refused by the policy,
suspends the one it has); ``request_sync`` starts one Job now; ``purge_step`` drives the
purge Job on deletion; ``StatusWriter`` is the single path through which
status is written. Handlers in ``handlers.py`` only call these and translate
the outcome into kopf's retry semantics.

Status is written by more than one handler (reconciliation, Pod and CronJob
events), always computed against the DataSource as the watch delivered it and only
when something changed: under a per-DataSource lock with that body's resourceVersion
as a precondition, or (``Ready=True`` after a converge) left in kopf's patch of the
handler, which kopf applies with its own state in one JSON Patch that tests the same
resourceVersion. Events are posted for condition transitions; metrics are derived
from the status that was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import kopf

from ragkeeper_operator import builders, drift, policy, status
from ragkeeper_operator.kube import Conflict, KubeClient, NotFound
from ragkeeper_operator.lookups import Lookups
from ragkeeper_operator.metrics import OperatorMetrics
from ragkeeper_operator.settings import OperatorSettings
from ragkeeper_operator.spec import (
    DataSourceSpec,
    DependencyMissing,
    GrantMissing,
    InvalidSpec,
    OperatorError,
    parse_spec,
    purge_spec,
)
from ragkeeper_operator.watched import Watched

logger = logging.getLogger(__name__)

DS = (builders.GROUP, builders.VERSION, builders.PLURAL)
CRONJOBS = ("batch", "v1", "cronjobs")
JOBS = ("batch", "v1", "jobs")

StatusFn = Callable[[dict[str, Any], Mapping[str, Any]], dict[str, Any]]


def _generation(body: Mapping[str, Any]) -> int | None:
    value = (body.get("metadata") or {}).get("generation")
    return value if isinstance(value, int) else None


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def post_event(body: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
    """Queue a Kubernetes Event on the DataSource (kopf posts it in the background)."""
    kopf.event(cast(kopf.Body, body), type=event_type, reason=reason, message=message)


@dataclass(frozen=True)
class StatusChange:
    body: Mapping[str, Any]
    before: Mapping[str, Any]
    after: Mapping[str, Any]


def _apply(
    fn: StatusFn, body: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``body``'s status, ``fn``'s new status for it, and the patch from one to the other."""
    before = dict(body.get("status") or {})
    after = fn(dict(before), body)
    return before, after, status.status_patch(before, after)


class StatusWriter:
    """Serialises status writes per DataSource and skips writes that change nothing."""

    def __init__(self, kube: KubeClient, metrics: OperatorMetrics) -> None:
        self._kube = kube
        self._metrics = metrics
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def update(
        self, namespace: str, name: str, fn: StatusFn, seen: Mapping[str, Any] | None = None
    ) -> StatusChange | None:
        """Apply ``fn`` to the current status; write, post Events and update metrics if changed.

        ``seen`` is the DataSource as a watch event delivered it (kopf's body): when ``fn``
        changes nothing in it, nothing is read or written; otherwise the patch is made
        against it with its resourceVersion as a precondition, and only a conflict (someone
        wrote in between) costs a fresh read and a second try.
        """
        lock = self._locks.get((namespace, name))
        if lock is None:
            lock = asyncio.Lock()
            self._locks[(namespace, name)] = lock
        async with lock:
            change = await self._write(namespace, name, fn, seen)
            if change is None:
                return None
            # Under the lock, so the gauges follow the writes in the order they were made.
            self._observe(namespace, name, change.after)
        self._announce(change)
        return change

    def defer(
        self, namespace: str, name: str, fn: StatusFn, seen: Mapping[str, Any], patch: kopf.Patch
    ) -> StatusChange | None:
        """Like ``update``, but the write goes into kopf's ``patch`` of the running handler.

        kopf applies it after the handler, with its own state, in one JSON Patch of the status
        that tests the resourceVersion of ``seen`` first. Should someone have written in
        between, kopf gets a 422 and applies it again to the next body the watch delivers:
        ``fn`` runs on that body's status, so that other write is kept.
        """
        before, after, changed = _apply(fn, seen)
        if not changed:
            return None

        def write(raw: Any) -> None:
            raw["status"] = fn(dict(raw.get("status") or {}), raw)

        patch.fns.append(write)
        change = StatusChange(body=seen, before=before, after=after)
        self._observe(namespace, name, change.after)
        self._announce(change)
        return change

    @staticmethod
    def _announce(change: StatusChange) -> None:
        """One Event per condition transition."""
        for transition in status.transitions(change.before, change.after):
            post_event(change.body, transition.event_type, transition.reason, transition.message)

    async def _write(
        self, namespace: str, name: str, fn: StatusFn, seen: Mapping[str, Any] | None
    ) -> StatusChange | None:
        version = ((seen or {}).get("metadata") or {}).get("resourceVersion")
        if seen is not None and version:
            before, after, patch = _apply(fn, seen)
            if not patch:
                return None
            precondition = {"metadata": {"resourceVersion": version}, "status": patch}
            with contextlib.suppress(Conflict):
                await self._kube.patch(*DS, namespace, name, precondition, subresource="status")
                return StatusChange(body=seen, before=before, after=after)
        body = await self._kube.get(*DS, namespace, name)
        if body is None:
            return None
        before, after, patch = _apply(fn, body)
        if not patch:
            return None
        await self._kube.patch(*DS, namespace, name, {"status": patch}, subresource="status")
        return StatusChange(body=body, before=before, after=after)

    def _observe(self, namespace: str, name: str, current: Mapping[str, Any]) -> None:
        ready = status.condition(current, status.READY)
        if ready is not None:
            self._metrics.set_ready(namespace, name, ready.get("status") == "True")
        last_success = _timestamp(current.get("lastSuccessfulTime"))
        labels = {"namespace": namespace, "datasource": name}
        if last_success is not None:
            self._metrics.last_success.labels(**labels).set(last_success)
        last_run = current.get("lastRun") or {}
        if isinstance(last_run.get("documents_total"), int):
            self._metrics.documents.labels(**labels).set(last_run["documents_total"])
        if isinstance(last_run.get("files_failed"), int):
            self._metrics.files_failed.labels(**labels).set(last_run["files_failed"])


@dataclass
class Runtime:
    """Everything handlers share: settings, metrics, and (after login) the API client."""

    settings: OperatorSettings
    metrics: OperatorMetrics
    configuration: Any = None
    kube: KubeClient | None = None
    writer: StatusWriter | None = None
    lookups: Lookups | None = None
    # resourceVersion of each CronJob as our last drift repair left it (see repair_drift).
    repaired: dict[tuple[str, str], str] = field(default_factory=dict)
    # The DataSources and owned CronJobs as the watches deliver them (watched.py), primed when
    # the operator starts; until then (no kopf, e.g. a unit test) they are read with a GET.
    datasources: Watched = field(default_factory=lambda: Watched(DS))
    cronjobs: Watched = field(
        default_factory=lambda: Watched(
            CRONJOBS, selector=builders.MANAGED_SELECTOR, unread=("status",)
        )
    )

    def attach(self, kube: KubeClient) -> None:
        self.kube = kube
        self.writer = StatusWriter(kube, self.metrics)
        self.lookups = Lookups(kube, self.settings.dependency_cache_seconds)

    @property
    def api(self) -> KubeClient:
        if self.kube is None:
            raise RuntimeError("the Kubernetes client is not connected yet")
        return self.kube

    async def datasource(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The DataSource as the watch last delivered it (``None``: there is none)."""
        return await self._watched(self.datasources, namespace, name)

    async def cronjob(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """An owned CronJob as the watch last delivered it (``None``: there is none)."""
        return await self._watched(self.cronjobs, namespace, name)

    async def prime(self) -> None:
        """One LIST of the DataSources and of the owned CronJobs (per watched namespace)."""
        for store in (self.datasources, self.cronjobs):
            await store.prime(self.api, self.settings.watch_namespaces)

    async def _watched(self, store: Watched, namespace: str, name: str) -> Mapping[str, Any] | None:
        if not store.primed:
            return await self.api.get(*store.resource, namespace, name)
        return store.get(namespace, name)

    @property
    def dependencies(self) -> Lookups:
        if self.lookups is None:
            raise RuntimeError("the Kubernetes client is not connected yet")
        return self.lookups

    @property
    def status(self) -> StatusWriter:
        if self.writer is None:
            raise RuntimeError("the Kubernetes client is not connected yet")
        return self.writer


def admit(body: Mapping[str, Any], settings: OperatorSettings) -> DataSourceSpec:
    """The parsed spec, if the job policy allows it; ``InvalidSpec``/``PolicyDenied`` otherwise."""
    spec = parse_spec(body.get("spec") or {})
    policy.check(spec, settings)
    return spec


async def _check_secret(
    rt: Runtime, namespace: str, name: str, key: str, why: str, *, grant: bool = False
) -> None:
    """The Secret exists, holds ``key`` and, with ``grant``, carries the grant label.

    The grant is checked first, so nothing about a Secret not granted (not even
    whether it has that key) reaches the DataSource's status.
    """
    info = await rt.dependencies.secret_info(namespace, name)
    if info is None:
        raise DependencyMissing(
            f"Secret {namespace}/{name} ({why}) does not exist", reason="SecretNotFound"
        )
    if grant and not policy.credentials_granted(info.labels, rt.settings):
        label = rt.settings.job_credentials_label
        raise GrantMissing(
            f"Secret {namespace}/{name} ({why}) is not granted to DataSources: it needs the "
            f'label {label}: "true", which the platform admin sets on Secrets DataSources may '
            "use (the label key is operator.jobs.policy.credentialsLabel, JOB_CREDENTIALS_LABEL)"
        )
    if key not in info.keys:
        raise DependencyMissing(
            f"Secret {namespace}/{name} ({why}) has no key {key!r}", reason="SecretKeyNotFound"
        )


async def check_dependencies(rt: Runtime, namespace: str, spec: DataSourceSpec) -> None:
    """Raise ``DependencyMissing`` for the first Secret, key or PVC the job would lack."""
    settings = rt.settings
    checks = [
        _check_secret(
            rt,
            namespace,
            settings.database_secret_name,
            settings.database_secret_key,
            "DATABASE_URL",
        )
    ]
    if settings.embedding_api_key_secret_name:
        checks.append(
            _check_secret(
                rt,
                namespace,
                settings.embedding_api_key_secret_name,
                settings.embedding_api_key_secret_key,
                "embedding API key",
            )
        )
    if spec.credentials is not None:
        checks.append(
            _check_secret(
                rt,
                namespace,
                spec.credentials.name,
                spec.credentials.key,
                "Drive credentials",
                grant=True,
            )
        )
    results = await asyncio.gather(*checks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    claim = spec.claim_name
    if claim and not await rt.dependencies.pvc_exists(namespace, claim):
        raise DependencyMissing(
            f"PersistentVolumeClaim {namespace}/{claim} does not exist",
            reason="VolumeClaimNotFound",
        )


async def ensure_cronjob(
    rt: Runtime, desired: Mapping[str, Any], existing: Mapping[str, Any] | None
) -> str:
    """Create the owned CronJob, or patch it when it drifted; return what was done.

    ``existing`` comes from the index: right after our own create or patch it may lag by one
    watch event; a create then meets a Conflict (and reads), a patch is repeated with the
    same content.
    """
    namespace = desired["metadata"]["namespace"]
    name = desired["metadata"]["name"]
    if existing is None:
        try:
            await rt.api.create(*CRONJOBS, dict(desired))
            return "created"
        except Conflict:
            existing = await rt.api.get(*CRONJOBS, namespace, name)
            if existing is None:
                raise
    if not drift.cronjob_drifted(existing, desired):
        return "unchanged"
    await rt.api.patch(*CRONJOBS, namespace, name, drift.cronjob_patch(existing, desired))
    return "updated"


def in_force(
    body: Mapping[str, Any], existing: Mapping[str, Any] | None, desired: Mapping[str, Any]
) -> bool:
    """The DataSource is Ready for its current generation and its CronJob matches the spec.

    That Ready was written after the dependencies were checked for this very spec, so a
    resync (an operator restart) that finds this has nothing to check or write.
    """
    ready = status.condition(body.get("status") or {}, status.READY)
    return (
        ready is not None
        and ready.get("status") == "True"
        and (body.get("status") or {}).get("observedGeneration") == _generation(body)
        and existing is not None
        and not drift.cronjob_drifted(existing, desired)
    )


def owner_name(cronjob: Mapping[str, Any]) -> str | None:
    """The DataSource a CronJob belongs to: its owner reference, else its label."""
    metadata = cronjob.get("metadata") or {}
    for ref in metadata.get("ownerReferences") or []:
        if ref.get("kind") == builders.KIND and str(ref.get("apiVersion", "")).startswith(
            f"{builders.GROUP}/"
        ):
            return str(ref["name"])
    label = (metadata.get("labels") or {}).get(builders.DATASOURCE_LABEL)
    return str(label) if label else None


async def repair_drift(rt: Runtime, namespace: str, cronjob: Mapping[str, Any]) -> list[str]:
    """Patch an owned CronJob back to what its DataSource asks for; return the drifted fields.

    Nothing happens (an empty list) when the CronJob matches, when its DataSource is
    gone or being deleted (the purge suspends the CronJob on purpose), or when the
    spec is invalid (the DataSource handler reports that). A missing dependency
    raises ``DependencyMissing``: the CronJob is then left as it is, as converge does.
    Loop guard: if an event shows the very resourceVersion our last repair produced
    and the comparison still sees drift, the comparison disagrees with how the API
    server stores the object; patching again would never end, so it is logged instead.
    """
    metadata = cronjob.get("metadata") or {}
    name = str(metadata.get("name", ""))
    datasource = owner_name(cronjob)
    if not datasource:
        return []
    owner = await rt.datasource(namespace, datasource)
    if owner is None or (owner.get("metadata") or {}).get("deletionTimestamp"):
        return []
    try:
        spec = admit(owner, rt.settings)
    except InvalidSpec:
        return []
    desired = builders.build_cronjob(owner, spec, rt.settings)
    if desired["metadata"]["name"] != name:
        return []
    drifted = drift.cronjob_drift(cronjob, desired)
    if not drifted:
        return []
    version = metadata.get("resourceVersion")
    if version and rt.repaired.get((namespace, name)) == version:
        logger.warning(
            "CronJob %s/%s still differs after its repair (%s); not patching again",
            namespace,
            name,
            drift.describe(drifted),
        )
        return []
    await check_dependencies(rt, namespace, spec)
    result = await rt.api.patch(*CRONJOBS, namespace, name, drift.cronjob_patch(cronjob, desired))
    repaired_version = (result.get("metadata") or {}).get("resourceVersion")
    if repaired_version:
        rt.repaired[(namespace, name)] = str(repaired_version)
    message = f"CronJob {name} differed from this DataSource; restored {drift.describe(drifted)}"
    post_event(owner, "Normal", "CronJobDriftRepaired", message)
    logger.info("repaired drift of CronJob %s/%s: %s", namespace, name, drift.describe(drifted))
    return drifted


async def report_ready(
    rt: Runtime,
    body: Mapping[str, Any],
    *,
    ready: bool,
    reason: str,
    message: str,
    patch: kopf.Patch | None = None,
) -> StatusChange | None:
    """Write the ``Ready`` condition (and observedGeneration, cronJobName); with ``patch``
    (kopf's, of the running handler) kopf writes it after the handler."""
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata["namespace"]), str(metadata["name"])
    generation = _generation(body)
    now = status.now_iso()

    def fn(current: dict[str, Any], _: Mapping[str, Any]) -> dict[str, Any]:
        return status.apply_ready(
            current,
            ready=ready,
            reason=reason,
            message=message,
            generation=generation,
            cronjob_name=builders.cronjob_name(name) if ready else current.get("cronJobName"),
            now=now,
        )

    if patch is not None:
        change = rt.status.defer(namespace, name, fn, body, patch)
    else:
        change = await rt.status.update(namespace, name, fn, seen=body)
    if change is None:
        rt.metrics.set_ready(namespace, name, ready)
    return change


async def suspend_refused(rt: Runtime, body: Mapping[str, Any], exc: OperatorError) -> None:
    """Suspend the DataSource's CronJob, if it has one still scheduled, after a policy refusal.

    Unlike after a plain invalid edit (the CronJob of the last valid spec keeps running),
    that CronJob may predate the policy or the grant and run what is now refused.
    The next converge that admits the spec restores ``suspend`` from the spec.
    """
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata["namespace"]), builders.cronjob_name(str(metadata["name"]))
    cronjob = await rt.api.get(*CRONJOBS, namespace, name)
    if cronjob is None or (cronjob.get("spec") or {}).get("suspend") is True:
        return
    await rt.api.patch(*CRONJOBS, namespace, name, {"spec": {"suspend": True}})
    message = f"CronJob {name} suspended until the DataSource is admitted again ({exc.reason})"
    post_event(body, "Warning", "CronJobSuspended", message)


async def converge(
    rt: Runtime, body: Mapping[str, Any], patch: kopf.Patch | None = None
) -> DataSourceSpec:
    """Bring one DataSource's CronJob and Ready condition in line with its spec.

    Raises ``InvalidSpec`` / ``DependencyMissing`` after recording them as
    ``Ready=False``; API errors propagate untouched for the caller to retry. With ``patch``
    (the kopf handler's), ``Ready=True`` is left in it for kopf to write with its own state;
    ``Ready=False`` is written at once, before kopf's retry bookkeeping.
    """
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata["namespace"]), str(metadata["name"])
    cronjob = builders.cronjob_name(name)
    try:
        spec = admit(body, rt.settings)
        desired = builders.build_cronjob(body, spec, rt.settings)
        existing = await rt.cronjob(namespace, cronjob)
        if not in_force(body, existing, desired):
            await check_dependencies(rt, namespace, spec)
    except (InvalidSpec, DependencyMissing) as exc:
        if exc.stops_cronjob:
            await suspend_refused(rt, body, exc)
        await report_ready(rt, body, ready=False, reason=exc.reason, message=exc.message)
        raise
    action = await ensure_cronjob(rt, desired, existing)
    suffix = " (suspended)" if spec.suspend else ""
    change = await report_ready(
        rt,
        body,
        ready=True,
        reason="Suspended" if spec.suspend else "CronJobReady",
        message=f"CronJob {cronjob} runs on schedule {spec.schedule!r}{suffix}",
        patch=patch,
    )
    # One Event per converge: the Ready transition's (a new DataSource's CronJobReady says
    # its CronJob runs) or, when Ready did not change, what was done to the CronJob.
    if action != "unchanged" and not (change and status.transitions(change.before, change.after)):
        post_event(body, "Normal", f"CronJob{action.capitalize()}", f"CronJob {cronjob} {action}")
    return spec


async def request_sync(rt: Runtime, body: Mapping[str, Any], value: str) -> str | None:
    """Create one immediate Job for a sync request value; ``None`` if already handled."""
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata["namespace"]), str(metadata["name"])
    if (body.get("status") or {}).get("lastSyncRequest") == value:
        return None
    try:
        await check_dependencies(rt, namespace, admit(body, rt.settings))
    except InvalidSpec as exc:
        post_event(body, "Warning", "SyncRefused", f"{exc.reason}: {exc.message}")
        raise
    cronjob = await rt.api.get(*CRONJOBS, namespace, builders.cronjob_name(name))
    if cronjob is None:
        raise DependencyMissing("the CronJob does not exist yet", reason="CronJobMissing")
    job = builders.build_manual_job(cronjob, value)
    job_name = str(job["metadata"]["name"])
    try:
        await rt.api.create(*JOBS, job)
        post_event(body, "Normal", "SyncStarted", f"Job {job_name} started on request {value!r}")
    except Conflict:
        logger.info("sync Job %s/%s already exists", namespace, job_name)

    def fn(current: dict[str, Any], _: Mapping[str, Any]) -> dict[str, Any]:
        return {**current, "lastSyncRequest": value}

    await rt.status.update(namespace, name, fn)
    return job_name


def _job_finished(job: Mapping[str, Any]) -> str | None:
    job_status = job.get("status") or {}
    for item in job_status.get("conditions") or []:
        if item.get("status") == "True" and item.get("type") in ("Complete", "Failed"):
            return str(item["type"])
    if (job_status.get("succeeded") or 0) >= 1:
        return "Complete"
    return None


async def purge_step(rt: Runtime, body: Mapping[str, Any], elapsed: float) -> bool:
    """Advance the purge of a deleted DataSource; ``True`` when the finalizer may go.

    The CronJob is suspended first so no sync races the purge. The purge Job is
    created once; the wait is bounded by ``PURGE_TIMEOUT_SECONDS``, after which
    (or on a failed Job) a Warning Event is posted and the DataSource released.
    """
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata["namespace"]), str(metadata["name"])
    spec = purge_spec(body.get("spec") or {})
    if spec is None:
        post_event(body, "Warning", "PurgeSkipped", "spec.type is not a known source type")
        return True
    with contextlib.suppress(NotFound):
        await rt.api.patch(
            *CRONJOBS, namespace, builders.cronjob_name(name), {"spec": {"suspend": True}}
        )
    desired = builders.build_purge_job(body, spec, rt.settings)
    job_name = str(desired["metadata"]["name"])
    job = await rt.api.get(*JOBS, namespace, job_name)
    if job is None:
        try:
            job = await rt.api.create(*JOBS, desired)
            message = f"Job {job_name} deletes this source's documents"
            post_event(body, "Normal", "PurgeStarted", message)
        except Conflict:
            job = await rt.api.get(*JOBS, namespace, job_name) or desired
    finished = _job_finished(job)
    if finished == "Complete":
        post_event(body, "Normal", "Purged", f"Job {job_name} removed this source's documents")
        rt.metrics.forget(namespace, name)
        return True
    if finished == "Failed" or elapsed >= rt.settings.purge_timeout_seconds:
        why = "failed" if finished == "Failed" else f"did not finish in {elapsed:.0f}s"
        post_event(
            body,
            "Warning",
            "PurgeFailed",
            f"Job {job_name} {why}; documents of this source may remain in the store",
        )
        rt.metrics.forget(namespace, name)
        return True
    return False


async def record_run(rt: Runtime, namespace: str, name: str, pod: Mapping[str, Any]) -> bool:
    """Fold a finished sync Pod into its DataSource's status; ``True`` if it was new."""
    outcome = status.run_outcome(pod)
    if outcome is None or outcome.run_mode == "purge":
        return False

    def fn(current: dict[str, Any], ds: Mapping[str, Any]) -> dict[str, Any]:
        return status.apply_run(current, outcome, _generation(ds))

    change = await rt.status.update(namespace, name, fn)
    if change is None or change.before.get("lastRun") == change.after.get("lastRun"):
        return False
    rt.metrics.runs.labels(reason=outcome.reason).inc()
    if outcome.duration_seconds is not None:
        rt.metrics.run_duration.labels(reason=outcome.reason).observe(outcome.duration_seconds)
    return True


async def record_schedule(
    rt: Runtime, namespace: str, name: str, cronjob: Mapping[str, Any]
) -> None:
    """Copy a CronJob's ``lastScheduleTime`` into its DataSource's status."""
    scheduled = (cronjob.get("status") or {}).get("lastScheduleTime")
    if not scheduled:
        return

    def fn(current: dict[str, Any], _: Mapping[str, Any]) -> dict[str, Any]:
        return status.apply_schedule(current, str(scheduled))

    await rt.status.update(namespace, name, fn)
