"""The job policy: what a DataSource may ask for beyond the operator's defaults.

Creating a DataSource makes the operator run a pod in that namespace with the
ingestion DSN. Everything in a spec that would widen that pod is checked against
settings only the platform admin sets (chart values ``operator.jobs.policy``):

- ``spec.image`` must be the operator's own ``RAG_IMAGE`` or on
  ``JOB_ALLOWED_IMAGES`` (exact references, or prefixes written with a trailing
  ``*``); empty means no override;
- an ``nfs`` volume's server must be on ``JOB_ALLOWED_NFS_SERVERS``; empty means
  no NFS volume;
- ``spec.resources`` may set only ``cpu`` and ``memory``, as positive quantities,
  each at most ``JOB_MAX_CPU`` / ``JOB_MAX_MEMORY`` (requests and limits alike),
  and no request above its limit. What is unset comes from the job defaults
  (``JOB_CPU_REQUEST``, ``JOB_CPU_LIMIT``, ``JOB_MEMORY_REQUEST``,
  ``JOB_MEMORY_LIMIT``, each lowered to its cap if above it), so every job has a
  cpu and a memory limit;
- the Drive credentials Secret must carry the label ``JOB_CREDENTIALS_LABEL``
  with the value ``"true"`` (``reconcile`` checks it on the read that checks the
  Secret's key, with ``credentials_granted``).

``hostPath`` is refused by ``spec.parse_spec`` whatever the settings. Each
refusal here is a ``PolicyDenied`` with its own reason; the message names the
setting the admin would change.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ragkeeper_operator.drift import parse_quantity
from ragkeeper_operator.settings import OperatorSettings
from ragkeeper_operator.spec import DataSourceSpec, PolicyDenied

RESOURCE_NAMES = ("cpu", "memory")
_CAP_SETTING = {
    "cpu": "operator.jobs.policy.maxCpu (JOB_MAX_CPU)",
    "memory": "operator.jobs.policy.maxMemory (JOB_MAX_MEMORY)",
}


def _capped(default: str, cap: str) -> str:
    """A job default, lowered to the cap when the admin set the cap below it."""
    quantity, limit = parse_quantity(default), parse_quantity(cap)
    return cap if quantity is not None and limit is not None and quantity > limit else default


def job_resources(spec: DataSourceSpec, settings: OperatorSettings) -> dict[str, Any]:
    """The container's requests and limits: the job defaults, overlaid with ``spec.resources``.

    A default request above the limit the spec sets is lowered to that limit.
    """
    cpu, memory = settings.job_max_cpu, settings.job_max_memory
    limits: dict[str, Any] = {
        "cpu": _capped(settings.job_cpu_limit, cpu),
        "memory": _capped(settings.job_memory_limit, memory),
    }
    limits.update(spec.resources.get("limits") or {})
    requests: dict[str, Any] = {
        "cpu": _capped(_capped(settings.job_cpu_request, cpu), str(limits["cpu"])),
        "memory": _capped(_capped(settings.job_memory_request, memory), str(limits["memory"])),
    }
    requests.update(spec.resources.get("requests") or {})
    return {"requests": requests, "limits": limits}


def image_allowed(image: str, settings: OperatorSettings) -> bool:
    """The operator's own image, an exact entry, or under a ``prefix*`` entry."""
    if image == settings.rag_image:
        return True
    return any(
        image.startswith(entry[:-1]) if entry.endswith("*") else image == entry
        for entry in settings.job_allowed_images
    )


def check_image(spec: DataSourceSpec, settings: OperatorSettings) -> None:
    if spec.image is not None and not image_allowed(spec.image, settings):
        raise PolicyDenied(
            f"spec.image {spec.image!r} is not allowed: the platform admin lists the images a "
            "DataSource may run in operator.jobs.policy.allowedImages (JOB_ALLOWED_IMAGES)",
            reason="ImageNotAllowed",
        )


def check_nfs(spec: DataSourceSpec, settings: OperatorSettings) -> None:
    nfs = spec.local_volume.get("nfs")
    if not isinstance(nfs, Mapping):
        return
    server = str(nfs.get("server", ""))
    allowed = {entry.lower() for entry in settings.job_allowed_nfs_servers}
    if server.lower() not in allowed:
        raise PolicyDenied(
            f"spec.local.volume.nfs.server {server!r} is not allowed: the platform admin lists "
            "the NFS servers DataSources may mount in operator.jobs.policy.allowedNfsServers "
            "(JOB_ALLOWED_NFS_SERVERS)",
            reason="NfsServerNotAllowed",
        )


def _quantity(kind: str, name: str, value: Any) -> Decimal:
    where = f"spec.resources.{kind}.{name}"
    if name not in RESOURCE_NAMES:
        raise PolicyDenied(
            f"{where}: a DataSource may set only cpu and memory", reason="InvalidResources"
        )
    quantity = parse_quantity(value)
    if quantity is None or quantity <= 0:
        raise PolicyDenied(
            f"{where} {value!r} is not a positive quantity", reason="InvalidResources"
        )
    return quantity


def check_resources(spec: DataSourceSpec, settings: OperatorSettings) -> None:
    """Every quantity the job would get is valid, within its cap, and no request above its limit."""
    caps = {"cpu": settings.job_max_cpu, "memory": settings.job_max_memory}
    resources = job_resources(spec, settings)
    parsed: dict[str, dict[str, Decimal]] = {}
    for kind in ("requests", "limits"):
        parsed[kind] = {}
        for name, value in resources[kind].items():
            quantity = parsed[kind][name] = _quantity(kind, name, value)
            if quantity > (parse_quantity(caps[name]) or 0):
                raise PolicyDenied(
                    f"spec.resources.{kind}.{name} {value!r} exceeds the cap {caps[name]} set in "
                    + _CAP_SETTING[name],
                    reason="ResourcesAboveCap",
                )
    for name, request in parsed["requests"].items():
        if request > parsed["limits"][name]:
            raise PolicyDenied(
                f"spec.resources.requests.{name} {resources['requests'][name]!r} exceeds its "
                f"limit {resources['limits'][name]!r}",
                reason="InvalidResources",
            )


def check(spec: DataSourceSpec, settings: OperatorSettings) -> None:
    """Raise ``PolicyDenied`` for the first thing the policy refuses in a parsed spec."""
    check_image(spec, settings)
    check_nfs(spec, settings)
    check_resources(spec, settings)


def credentials_granted(labels: Mapping[str, Any] | None, settings: OperatorSettings) -> bool:
    """Whether a Secret's labels grant it as a DataSource's credentials."""
    return (labels or {}).get(settings.job_credentials_label) == "true"
