"""Reading a DataSource's spec into a typed value, or saying precisely why not.

The API server validates the CRD schema, but the operator must not trust it:
older CRD versions, ``kubectl replace --validate=false`` and test emulators all
deliver specs the schema would reject. Everything a builder needs is checked
here, once, so builders can be plain functions of a valid ``DataSourceSpec``.

Errors (each carries the ``reason`` used in the ``Ready`` condition and Event)::

    OperatorError
    ├── InvalidSpec            permanent: the user must edit the DataSource
    │   └── PolicyDenied       the job policy refuses it (hostPath, image, NFS server,
    │                          resources); the existing CronJob is suspended
    └── DependencyMissing      temporary: a Secret, key or PVC that may appear later
        └── GrantMissing       the credentials Secret lacks the grant label; the existing
                               CronJob is suspended until the admin grants it

``stops_cronjob`` marks the two whose CronJob must not keep running: it may have
been made before the policy (or the grant) refused what it mounts or runs.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from croniter import croniter  # type: ignore[import-untyped]

SourceType = Literal["local", "googleDrive"]
DeletionPolicy = Literal["Delete", "Retain"]

PIPELINE_TYPES: dict[str, str] = {"local": "local", "googleDrive": "google_drive"}
VOLUME_SOURCES = ("persistentVolumeClaim", "nfs", "configMap")
_VOLUME_REQUIRED: dict[str, tuple[str, ...]] = {
    "persistentVolumeClaim": ("claimName",),
    "nfs": ("path", "server"),
    "configMap": ("name",),
}
"""The string fields each volume source needs, checked in this order."""
KNOWN_SPEC_FIELDS = frozenset(
    {
        "type",
        "schedule",
        "timeZone",
        "suspend",
        "local",
        "googleDrive",
        "deletionPolicy",
        "resources",
        "activeDeadlineSeconds",
        "image",
    }
)
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_FOLDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


class OperatorError(Exception):
    """Base of the operator's own errors; ``reason`` is a CamelCase condition reason."""

    reason = "Error"
    stops_cronjob = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidSpec(OperatorError):
    """The spec cannot work as written; retrying will not help until it is edited."""

    reason = "InvalidSpec"


class PolicyDenied(InvalidSpec):
    """The job policy (or the ban on hostPath) refuses the spec; its CronJob must not run."""

    reason = "PolicyDenied"
    stops_cronjob = True


class DependencyMissing(OperatorError):
    """Something the job needs does not exist yet; retried with backoff."""

    reason = "DependencyMissing"


class GrantMissing(DependencyMissing):
    """A Secret the spec names is not granted to DataSources (yet); retried with backoff."""

    reason = "CredentialsNotGranted"
    stops_cronjob = True


@dataclass(frozen=True)
class SecretRef:
    """A key inside a Secret in the DataSource's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class DataSourceSpec:
    """A validated DataSource spec, with defaults applied."""

    type: SourceType
    schedule: str
    time_zone: str | None = None
    suspend: bool = False
    deletion_policy: DeletionPolicy = "Delete"
    local_path: str | None = None
    local_sub_path: str | None = None
    local_volume: Mapping[str, Any] = field(default_factory=dict)
    folder_id: str | None = None
    credentials: SecretRef | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    active_deadline_seconds: int | None = None
    image: str | None = None

    @property
    def pipeline_type(self) -> str:
        """The ingestion job's ``RAG_PIPELINE_TYPE`` for this source."""
        return PIPELINE_TYPES[self.type]

    @property
    def claim_name(self) -> str | None:
        """The PVC a local source reads from, if its volume is a claim."""
        claim = self.local_volume.get("persistentVolumeClaim")
        return str(claim["claimName"]) if isinstance(claim, Mapping) else None


def validate_schedule(schedule: Any, time_zone: Any = None) -> tuple[str, str | None]:
    """Check a cron expression (5 fields or a macro) and an optional IANA time zone."""
    if not isinstance(schedule, str) or not schedule.strip():
        raise InvalidSpec("spec.schedule is required", reason="InvalidSchedule")
    expression = " ".join(schedule.split())
    if expression.startswith("@"):
        if expression not in _CRON_MACROS:
            raise InvalidSpec(f"unknown cron macro {expression!r}", reason="InvalidSchedule")
    elif len(expression.split(" ")) != 5 or not croniter.is_valid(expression):
        raise InvalidSpec(
            f"spec.schedule {expression!r} is not a valid 5-field cron expression",
            reason="InvalidSchedule",
        )
    if time_zone is not None:
        if not isinstance(time_zone, str):
            raise InvalidSpec("spec.timeZone must be a string", reason="InvalidSchedule")
        try:
            zoneinfo.ZoneInfo(time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidSpec(
                f"spec.timeZone {time_zone!r} is not a known time zone", reason="InvalidSchedule"
            ) from exc
    return expression, time_zone


def next_run(spec: DataSourceSpec, after: datetime | None = None) -> datetime:
    """When the schedule fires next (UTC unless ``timeZone`` is set)."""
    tz = zoneinfo.ZoneInfo(spec.time_zone) if spec.time_zone else UTC
    base = (after or datetime.now(UTC)).astimezone(tz)
    result: datetime = croniter(spec.schedule, base).get_next(datetime)
    return result


def _secret_ref(raw: Any, where: str) -> SecretRef:
    if not isinstance(raw, Mapping):
        raise InvalidSpec(f"{where} must be an object with name and key")
    name, key = raw.get("name"), raw.get("key", "credentials.json")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 253:
        raise InvalidSpec(f"{where}.name {name!r} is not a valid Secret name")
    if not isinstance(key, str) or not _SECRET_KEY.match(key) or len(key) > 253:
        raise InvalidSpec(f"{where}.key {key!r} is not a valid Secret key")
    return SecretRef(name=name, key=key)


def _local(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidSpec("spec.local is required when spec.type is local", reason="InvalidSource")
    path, sub_path = _local_paths(raw)
    return {"local_path": path, "local_sub_path": sub_path, "local_volume": _local_volume(raw)}


def _local_paths(raw: Mapping[str, Any]) -> tuple[str, str | None]:
    """``spec.local.path`` (absolute, no system directory) and the optional relative subPath."""
    path = raw.get("path", "/data")
    if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
        raise InvalidSpec(f"spec.local.path {path!r} must be an absolute path")
    # A deny-list, not a temp file (B108 does not apply).
    if path in {"/", "/tmp", "/dev", "/proc", "/sys", "/etc"}:  # nosec B108
        raise InvalidSpec(f"spec.local.path {path!r} would hide a system directory")
    sub_path = raw.get("subPath")
    if sub_path is not None and (
        not isinstance(sub_path, str) or sub_path.startswith("/") or ".." in sub_path.split("/")
    ):
        raise InvalidSpec(f"spec.local.subPath {sub_path!r} must be a relative path")
    return path, sub_path


def _local_volume(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``spec.local.volume``: exactly one supported source, with the fields it needs."""
    volume = raw.get("volume")
    if not isinstance(volume, Mapping) or len(volume) != 1:
        raise InvalidSpec(
            "spec.local.volume must set exactly one of " + ", ".join(VOLUME_SOURCES),
            reason="InvalidSource",
        )
    [(kind, source)] = volume.items()
    if kind == "hostPath":
        raise PolicyDenied(
            "spec.local.volume.hostPath is not allowed: a DataSource may not mount a directory "
            "of the node; use a persistentVolumeClaim",
            reason="HostPathNotAllowed",
        )
    if kind not in VOLUME_SOURCES or not isinstance(source, Mapping):
        raise InvalidSpec(f"spec.local.volume.{kind} is not a supported volume source")
    for required in _VOLUME_REQUIRED[kind]:
        if not isinstance(source.get(required), str):
            raise InvalidSpec(f"spec.local.volume.{kind}.{required} is required")
    return dict(volume)


def _google_drive(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidSpec(
            "spec.googleDrive is required when spec.type is googleDrive", reason="InvalidSource"
        )
    folder_id = raw.get("folderId")
    if not isinstance(folder_id, str) or not _FOLDER_ID.match(folder_id):
        raise InvalidSpec(f"spec.googleDrive.folderId {folder_id!r} is not a Drive folder id")
    credentials = _secret_ref(
        raw.get("credentialsSecretRef"), "spec.googleDrive.credentialsSecretRef"
    )
    return {"folder_id": folder_id, "credentials": credentials}


def parse_spec(spec: Mapping[str, Any]) -> DataSourceSpec:
    """Validate a raw ``spec`` mapping; raise ``InvalidSpec`` with a reason otherwise."""
    unknown = sorted(set(spec) - KNOWN_SPEC_FIELDS)
    if unknown:
        raise InvalidSpec(f"unknown fields in spec: {', '.join(unknown)}", reason="UnknownFields")
    source_type = spec.get("type")
    if source_type not in PIPELINE_TYPES:
        raise InvalidSpec(
            f"spec.type {source_type!r} must be one of local, googleDrive", reason="InvalidSource"
        )
    other = "googleDrive" if source_type == "local" else "local"
    if spec.get(other) is not None:
        raise InvalidSpec(
            f"spec.{other} must not be set when spec.type is {source_type}", reason="InvalidSource"
        )
    schedule, time_zone = validate_schedule(spec.get("schedule"), spec.get("timeZone"))
    suspend = spec.get("suspend", False)
    if not isinstance(suspend, bool):
        raise InvalidSpec("spec.suspend must be a boolean")
    policy = spec.get("deletionPolicy", "Delete")
    if policy not in ("Delete", "Retain"):
        raise InvalidSpec(f"spec.deletionPolicy {policy!r} must be Delete or Retain")
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (
        isinstance(deadline, bool) or not isinstance(deadline, int) or deadline < 60
    ):
        raise InvalidSpec("spec.activeDeadlineSeconds must be an integer of at least 60")
    image = spec.get("image")
    if image is not None and (not isinstance(image, str) or not image or " " in image):
        raise InvalidSpec(f"spec.image {image!r} is not an image reference")
    resources = spec.get("resources") or {}
    if (
        not isinstance(resources, Mapping)
        or set(resources) - {"requests", "limits"}
        or not all(isinstance(part or {}, Mapping) for part in resources.values())
    ):
        raise InvalidSpec("spec.resources may only hold requests and limits, each a mapping")
    source = (
        _local(spec.get("local"))
        if source_type == "local"
        else _google_drive(spec.get("googleDrive"))
    )
    return DataSourceSpec(
        type=source_type,
        schedule=schedule,
        time_zone=time_zone,
        suspend=suspend,
        deletion_policy=policy,
        resources=dict(resources),
        active_deadline_seconds=deadline,
        image=image,
        **source,
    )


def purge_spec(spec: Mapping[str, Any]) -> DataSourceSpec | None:
    """What a purge Job needs of a spec; ``None`` when no sync could ever have run.

    A purge mounts no source, reads no credentials and runs the operator's own image with
    the default resources: only the source type matters. So a spec that is invalid now (a
    ``hostPath`` stored before it was refused, say) still gets its documents purged, as
    long as its type is known.
    """
    source_type = spec.get("type")
    if source_type not in PIPELINE_TYPES:
        return None
    try:
        parsed = parse_spec(spec)
    except InvalidSpec:
        return DataSourceSpec(type=source_type, schedule="@daily")
    return DataSourceSpec(
        type=parsed.type,
        schedule=parsed.schedule,
        active_deadline_seconds=parsed.active_deadline_seconds,
    )
