"""Spec validation, run outcomes from Pods, conditions and minimal status patches."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ragkeeper_operator import status
from ragkeeper_operator.spec import InvalidSpec, parse_spec

PVC = {"persistentVolumeClaim": {"claimName": "docs"}}


def local(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "local",
        "schedule": "*/15 * * * *",
        "local": {"volume": PVC},
    }
    spec.update(overrides)
    return spec


def test_parse_spec_applies_defaults() -> None:
    spec = parse_spec(local())
    assert (spec.local_path, spec.deletion_policy, spec.suspend) == ("/data", "Delete", False)
    assert spec.claim_name == "docs"
    assert spec.pipeline_type == "local"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (local(schedule="61 * * * *"), "InvalidSchedule"),
        (local(schedule="* * * *"), "InvalidSchedule"),
        (local(schedule="@fortnightly"), "InvalidSchedule"),
        (local(timeZone="Mars/Olympus"), "InvalidSchedule"),
        (local(type="s3"), "InvalidSource"),
        (local(googleDrive={"folderId": "x"}), "InvalidSource"),
        (local(local=None), "InvalidSource"),
        (local(local={"volume": {**PVC, "configMap": {"name": "x"}}}), "InvalidSource"),
        (local(local={"volume": {"hostPath": {"path": "/"}}}), "HostPathNotAllowed"),
        (local(resources={"limits": ["memory"]}), "InvalidSpec"),
        (local(colour="blue"), "UnknownFields"),
        (local(deletionPolicy="Purge"), "InvalidSpec"),
        (local(activeDeadlineSeconds=5), "InvalidSpec"),
        (local(local={"path": "relative", "volume": PVC}), "InvalidSpec"),
        (local(local={"path": "/tmp", "volume": PVC}), "InvalidSpec"),
        (
            {"type": "googleDrive", "schedule": "@daily", "googleDrive": {"folderId": "a b"}},
            "InvalidSpec",
        ),
        (
            {
                "type": "googleDrive",
                "schedule": "@daily",
                "googleDrive": {"folderId": "abc", "credentialsSecretRef": {"name": "Bad_Name"}},
            },
            "InvalidSpec",
        ),
    ],
)
def test_parse_spec_rejects_with_reason(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(spec)
    assert caught.value.reason == reason


def pod(exit_code: int, message: str, phase: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "ragkeeper-docs-1-abcde",
            "labels": {"ragkeeper.dev/run-mode": "single"},
            "ownerReferences": [{"kind": "Job", "name": "ragkeeper-docs-1"}],
        },
        "status": {
            "phase": phase or ("Succeeded" if exit_code == 0 else "Failed"),
            "containerStatuses": [
                {
                    "name": "ingest",
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "message": message,
                            "finishedAt": "2026-01-01T10:00:00Z",
                        }
                    },
                }
            ],
        },
    }


STATS = {"pipeline_id": "docs/x", "status": "success", "files_added": 2, "files_failed": 0}


@pytest.mark.parametrize(
    ("code", "run_status", "reason"),
    [
        (0, "success", "Succeeded"),
        (0, "partial", "CompletedWithErrors"),
        (1, "failed", "Failed"),
        (2, "failed", "ConfigurationInvalid"),
        (3, "failed", "CredentialsInvalid"),
        (137, "failed", "Failed"),
    ],
)
def test_run_outcome_reason_from_exit_code(code: int, run_status: str, reason: str) -> None:
    outcome = status.run_outcome(pod(code, json.dumps({**STATS, "status": run_status})))
    assert outcome is not None
    assert (outcome.reason, outcome.job_name, outcome.succeeded) == (
        reason,
        "ragkeeper-docs-1",
        code == 0,
    )


def test_run_outcome_reads_last_json_line_of_log_fallback() -> None:
    logs = '{"level": "info"}\nsome text\n' + json.dumps(STATS) + "\n"
    outcome = status.run_outcome(pod(0, logs))
    assert outcome is not None and outcome.stats == STATS


@pytest.mark.parametrize(
    ("started", "seconds"),
    [
        ("2026-01-01T09:45:00Z", 900.0),
        ("2026-01-01T10:00:00Z", 0.0),
        (None, None),  # no startedAt: no duration rather than a guess
        ("2026-01-01T10:00:01Z", None),  # clocks disagree: never a negative duration
        ("not a time", None),
    ],
)
def test_run_outcome_duration_from_the_container(
    started: str | None, seconds: float | None
) -> None:
    finished = pod(0, json.dumps(STATS))
    if started:
        terminated = finished["status"]["containerStatuses"][0]["state"]["terminated"]
        terminated["startedAt"] = started
    outcome = status.run_outcome(finished)
    assert outcome is not None and outcome.duration_seconds == seconds


def test_run_outcome_none_while_running() -> None:
    running = pod(0, "")
    running["status"] = {"phase": "Running"}
    assert status.run_outcome(running) is None


def test_apply_run_keeps_newest_and_transition_time() -> None:
    first = status.run_outcome(pod(0, json.dumps(STATS)))
    assert first is not None
    after = status.apply_run({}, first, generation=2)
    assert after["lastSuccessfulTime"] == "2026-01-01T10:00:00Z"
    assert after["lastRun"]["files_added"] == 2
    cond = status.condition(after, status.LAST_RUN_SUCCEEDED)
    assert cond is not None and cond["status"] == "True" and cond["observedGeneration"] == 2

    older = pod(3, json.dumps({**STATS, "status": "failed"}))
    older["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = (
        "2025-12-31T10:00:00Z"
    )
    stale = status.run_outcome(older)
    assert stale is not None
    assert status.apply_run(after, stale, generation=2) == after
    assert status.status_patch(after, status.apply_run(after, first, generation=2)) == {}


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    conds = status.set_condition([], "Ready", True, "CronJobReady", "ok", 1, "2026-01-01T00:00:00Z")
    same = status.set_condition(conds, "Ready", True, "Suspended", "s", 2, "2026-01-02T00:00:00Z")
    flipped = status.set_condition(
        same, "Ready", False, "SecretNotFound", "x", 2, "2026-01-03T00:00:00Z"
    )
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert flipped[0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def test_transitions_report_changed_conditions_only() -> None:
    before = status.apply_ready(
        {}, ready=True, reason="CronJobReady", message="m", generation=1, cronjob_name="c", now="t"
    )
    again = status.apply_ready(
        before,
        ready=True,
        reason="CronJobReady",
        message="m2",
        generation=1,
        cronjob_name="c",
        now="u",
    )
    broken = status.apply_ready(
        again,
        ready=False,
        reason="SecretNotFound",
        message="x",
        generation=2,
        cronjob_name=None,
        now="v",
    )
    assert status.transitions(before, again) == []
    [change] = status.transitions(again, broken)
    assert (change.reason, change.event_type) == ("SecretNotFound", "Warning")
    assert broken["cronJobName"] == "c"
    assert status.status_patch(again, broken).keys() == {"conditions", "observedGeneration"}
