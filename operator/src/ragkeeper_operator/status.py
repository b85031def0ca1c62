"""Pure status logic: conditions, run outcomes read from Pods, and minimal patches.

A finished ingestion Pod carries the job's stats JSON in its container's
termination message (``/dev/termination-log``; with ``FallbackToLogsOnError``
the log tail, whose last JSON line is the same object). ``run_outcome`` turns
that Pod into a ``RunOutcome``; ``apply_run`` and ``apply_ready`` fold outcomes
into a DataSource status; ``status_patch`` keeps only what changed, so the
operator writes status only when it changes, and ``transitions`` says which
condition changes deserve an Event.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ragkeeper_operator.builders import CONTAINER, RUN_MODE_LABEL

READY = "Ready"
LAST_RUN_SUCCEEDED = "LastRunSucceeded"
MAX_ERRORS_KEPT = 20
MAX_TEXT = 512

EXIT_REASONS = {1: "Failed", 2: "ConfigurationInvalid", 3: "CredentialsInvalid"}


def now_iso(moment: datetime | None = None) -> str:
    """RFC 3339 UTC timestamp with second precision, as Kubernetes writes them."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clip(text: Any, limit: int = MAX_TEXT) -> str:
    value = str(text)
    return value if len(value) <= limit else value[: limit - 3] + "..."


@dataclass(frozen=True)
class RunOutcome:
    """What one finished ingestion Pod reported."""

    job_name: str
    pod_name: str
    run_mode: str
    exit_code: int
    finished_at: str
    stats: Mapping[str, Any] | None
    message: str
    # Seconds the ingestion container ran (its startedAt to finishedAt); None if either is unknown.
    duration_seconds: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    @property
    def reason(self) -> str:
        """The ``LastRunSucceeded`` reason, chosen from the exit code and stats status."""
        if self.exit_code == 0:
            partial = self.stats is not None and self.stats.get("status") == "partial"
            return "CompletedWithErrors" if partial else "Succeeded"
        return EXIT_REASONS.get(self.exit_code, "Failed")

    @property
    def files_failed(self) -> int | None:
        value = (self.stats or {}).get("files_failed")
        return value if isinstance(value, int) else None

    @property
    def documents_total(self) -> int | None:
        value = (self.stats or {}).get("documents_total")
        return value if isinstance(value, int) else None

    def summary(self) -> str:
        """A one-line human message for the condition and the Event."""
        stats = self.stats or {}
        if self.exit_code == 0:
            parts = [
                f"{stats.get(key, 0)} {key.removeprefix('files_')}"
                for key in ("files_added", "files_updated", "files_deleted", "files_failed")
            ]
            return f"job {self.job_name}: " + ", ".join(parts)
        detail = _failure_detail(stats) or self.message
        return _clip(f"job {self.job_name} exited with {self.exit_code}: {detail}".rstrip(": "))


def _failure_detail(stats: Mapping[str, Any]) -> str:
    """Why a run failed, from its stats: the job's ``error`` line, else the first file error."""
    error = stats.get("error")
    if isinstance(error, str) and error:
        return error
    errors = stats.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        return str(errors[0].get("error", ""))
    return ""


def parse_stats(message: str | None) -> dict[str, Any] | None:
    """The stats object from a termination message (whole, or its last JSON line)."""
    if not message:
        return None
    for candidate in [message, *reversed(message.strip().splitlines())]:
        text = candidate.strip()
        if not text.startswith("{"):
            continue
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict) and "status" in value and "pipeline_id" in value:
            return value
    return None


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == CONTAINER:
            terminated = (container.get("state") or {}).get("terminated")
            return terminated if isinstance(terminated, Mapping) else None
    return None


def run_outcome(pod: Mapping[str, Any]) -> RunOutcome | None:
    """The outcome of a finished ingestion Pod; ``None`` while it is still running."""
    status = pod.get("status") or {}
    if status.get("phase") not in ("Succeeded", "Failed"):
        return None
    metadata = pod.get("metadata") or {}
    terminated = _terminated(pod) or {}
    exit_code = terminated.get("exitCode")
    if not isinstance(exit_code, int):
        exit_code = 0 if status.get("phase") == "Succeeded" else 1
    message = str(terminated.get("message") or status.get("message") or "")
    job_name = next(
        (
            str(ref.get("name"))
            for ref in metadata.get("ownerReferences") or []
            if ref.get("kind") == "Job"
        ),
        str((metadata.get("labels") or {}).get("job-name", metadata.get("name", ""))),
    )
    finished = terminated.get("finishedAt") or status.get("startTime") or now_iso()
    reason = terminated.get("reason") or status.get("reason")
    stats = parse_stats(message)
    if stats is None and reason and exit_code != 0:
        message = f"{reason}: {message}" if message else str(reason)
    return RunOutcome(
        job_name=job_name,
        pod_name=str(metadata.get("name", "")),
        run_mode=str((metadata.get("labels") or {}).get(RUN_MODE_LABEL, "single")),
        exit_code=exit_code,
        finished_at=str(finished),
        stats=stats,
        message=_clip(message.strip()),
        duration_seconds=_duration(terminated.get("startedAt"), terminated.get("finishedAt")),
    )


def _duration(started: object, finished: object) -> float | None:
    """Seconds between two RFC 3339 timestamps of the API server; None if one is missing."""
    if not isinstance(started, str) or not isinstance(finished, str):
        return None
    try:
        start = datetime.fromisoformat(started.replace("Z", "+00:00"))
        end = datetime.fromisoformat(finished.replace("Z", "+00:00"))
    except ValueError:
        return None
    seconds = (end - start).total_seconds()
    return seconds if seconds >= 0 else None


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Upsert one ``metav1.Condition``; ``lastTransitionTime`` moves only when status does."""
    wanted = "True" if status else "False"
    result: list[dict[str, Any]] = []
    previous: Mapping[str, Any] | None = None
    for condition in conditions:
        if condition.get("type") == type_:
            previous = condition
        else:
            result.append(dict(condition))
    changed = previous is None or previous.get("status") != wanted
    new: dict[str, Any] = {
        "type": type_,
        "status": wanted,
        "reason": reason,
        "message": _clip(message, 1024),
        "lastTransitionTime": now
        if changed or previous is None
        else previous.get("lastTransitionTime", now),
    }
    if generation is not None:
        new["observedGeneration"] = generation
    result.append(new)
    order = {READY: 0, LAST_RUN_SUCCEEDED: 1}
    return sorted(result, key=lambda c: (order.get(str(c.get("type")), 9), str(c.get("type"))))


def condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    """The condition of that type in a status, if any."""
    for item in status.get("conditions") or []:
        if isinstance(item, Mapping) and item.get("type") == type_:
            return item
    return None


def apply_ready(
    status: Mapping[str, Any],
    *,
    ready: bool,
    reason: str,
    message: str,
    generation: int | None,
    cronjob_name: str | None,
    now: str,
) -> dict[str, Any]:
    """The status after a reconciliation (spec valid and CronJob in place, or why not)."""
    result = copy.deepcopy(dict(status))
    result["conditions"] = set_condition(
        result.get("conditions") or [], READY, ready, reason, message, generation, now
    )
    if generation is not None:
        result["observedGeneration"] = generation
    if cronjob_name:
        result["cronJobName"] = cronjob_name
    return result


def _last_run(outcome: RunOutcome) -> dict[str, Any]:
    run: dict[str, Any] = dict(outcome.stats or {"status": "failed"})
    errors = run.get("errors")
    if isinstance(errors, list):
        run["errors"] = [
            {"file": _clip(e.get("file", ""), 256), "error": _clip(e.get("error", ""))}
            for e in errors[:MAX_ERRORS_KEPT]
            if isinstance(e, Mapping)
        ]
    run.update(
        job_name=outcome.job_name,
        pod_name=outcome.pod_name,
        exit_code=outcome.exit_code,
        finished_at=outcome.finished_at,
    )
    if outcome.stats is None and outcome.message:
        run["message"] = outcome.message
    return run


def apply_run(
    status: Mapping[str, Any], outcome: RunOutcome, generation: int | None
) -> dict[str, Any]:
    """The status after a finished sync run; older runs never overwrite newer ones."""
    result = copy.deepcopy(dict(status))
    previous = result.get("lastRun") or {}
    if str(previous.get("finished_at", "")) > outcome.finished_at:
        return result
    if (
        previous.get("pod_name") == outcome.pod_name
        and previous.get("exit_code") == outcome.exit_code
    ):
        return result
    result["lastRun"] = _last_run(outcome)
    if outcome.succeeded:
        result["lastSuccessfulTime"] = outcome.finished_at
    result["conditions"] = set_condition(
        result.get("conditions") or [],
        LAST_RUN_SUCCEEDED,
        outcome.succeeded,
        outcome.reason,
        outcome.summary(),
        generation,
        outcome.finished_at,
    )
    return result


def apply_schedule(status: Mapping[str, Any], last_schedule_time: str | None) -> dict[str, Any]:
    """Copy the CronJob's ``lastScheduleTime`` (newer values only)."""
    result = copy.deepcopy(dict(status))
    if last_schedule_time and str(result.get("lastScheduleTime", "")) < last_schedule_time:
        result["lastScheduleTime"] = last_schedule_time
    return result


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level status keys that changed (``None`` removes one); empty when nothing did."""
    patch: dict[str, Any] = {}
    for key in set(current) | set(desired):
        if current.get(key) != desired.get(key):
            patch[key] = desired.get(key)
    return patch


@dataclass(frozen=True)
class Transition:
    """A condition whose status or reason changed: worth one Event."""

    type: str
    status: str
    reason: str
    message: str

    @property
    def event_type(self) -> str:
        return "Normal" if self.status == "True" else "Warning"


def transitions(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Transition]:
    """Conditions that appeared or changed status/reason between two statuses."""
    result = []
    for new in after.get("conditions") or []:
        old = condition(before, str(new.get("type"))) or {}
        if old.get("status") != new.get("status") or old.get("reason") != new.get("reason"):
            result.append(
                Transition(
                    type=str(new.get("type")),
                    status=str(new.get("status")),
                    reason=str(new.get("reason")),
                    message=str(new.get("message", "")),
                )
            )
    return result
