"""Drift between a live CronJob and the one the builders make for its DataSource.

The operator repairs an owned CronJob whenever it differs from what
``builders.build_cronjob`` makes, including right after someone edits it by
hand. Every CronJob event runs this comparison, so it must never report drift
for the operator's own writes, or the operator would patch forever:

- only the fields the builder owns are compared: the desired object is walked
  and the live one looked up, so whatever the API server adds (defaults,
  ``status``, ``uid``, ``managedFields``) is never drift;
- resource quantities compare by value (``1000m`` equals ``1``), because the
  API server rewrites them in canonical form;
- the spec-hash annotation catches a field the DataSource no longer asks for
  (the subset walk cannot see a field that is only on the live side), and
  ``spec.timeZone``, the one optional top-level field, is checked both ways.

``cronjob_drift`` returns the paths that differ (for logs and the Event),
``cronjob_patch`` the JSON Patch that restores the object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

# Keys under which values are resource quantities (container resources, emptyDir size).
QUANTITY_KEYS = frozenset({"requests", "limits", "sizeLimit"})
# Optional fields the builder sets only sometimes: present on the live side only is drift too.
OPTIONAL_OWNED = (("spec", "timeZone"),)

_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)
_SCALE = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity (``"500m"``, ``"1Gi"``, ``"1e3"``, ``2``) as a number or ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    match = _QUANTITY.match(value.strip())
    if match is None:
        return None
    number, exponent, suffix = match.groups()
    try:
        result = Decimal(number)
    except InvalidOperation:
        return None
    if exponent is not None:
        return result.scaleb(int(exponent))
    return result * _SCALE[suffix] if suffix else result


def _same_scalar(wanted: Any, actual: Any, quantity: bool) -> bool:
    if wanted == actual and type(wanted) is type(actual):
        return True
    if quantity:
        left, right = parse_quantity(wanted), parse_quantity(actual)
        return left is not None and left == right
    return False


def _key(path: str, key: str) -> str:
    step = f'["{key}"]' if any(c in key for c in "./") else f".{key}"
    return f"{path}{step}" if path else step.lstrip(".")


def _walk(wanted: Any, actual: Any, path: str, out: list[str], quantity: bool = False) -> None:
    if isinstance(wanted, Mapping):
        if not isinstance(actual, Mapping):
            out.append(path)
            return
        for key, value in wanted.items():
            where = _key(path, str(key))
            if key not in actual:
                out.append(where)
            else:
                _walk(value, actual[key], where, out, quantity or key in QUANTITY_KEYS)
    elif isinstance(wanted, list):
        if not isinstance(actual, list) or len(wanted) != len(actual):
            out.append(path)
            return
        for index, (w, a) in enumerate(zip(wanted, actual, strict=True)):
            _walk(w, a, f"{path}[{index}]", out, quantity)
    elif not _same_scalar(wanted, actual, quantity):
        out.append(path)


def _lookup(body: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = body
    for step in path:
        if not isinstance(node, Mapping) or step not in node:
            return None
        node = node[step]
    return node


def cronjob_drift(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> list[str]:
    """The builder-owned fields where the live CronJob differs from the desired one.

    An empty list means no drift: nothing to patch.
    """
    out: list[str] = []
    live_meta = existing.get("metadata") or {}
    want_meta = desired.get("metadata") or {}
    _walk(
        want_meta.get("annotations") or {},
        live_meta.get("annotations") or {},
        "metadata.annotations",
        out,
    )
    _walk(want_meta.get("labels") or {}, live_meta.get("labels") or {}, "metadata.labels", out)
    _walk(
        want_meta.get("ownerReferences") or [],
        live_meta.get("ownerReferences") or [],
        "metadata.ownerReferences",
        out,
    )
    _walk(desired.get("spec") or {}, existing.get("spec") or {}, "spec", out)
    for field in OPTIONAL_OWNED:
        if _lookup(desired, field) is None and _lookup(existing, field) is not None:
            out.append(".".join(field))
    return out


def cronjob_drifted(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether the live CronJob differs from what the DataSource asks for."""
    return bool(cronjob_drift(existing, desired))


def describe(paths: list[str], limit: int = 4) -> str:
    """A short, readable list of drifted fields for an Event message."""
    shown = ", ".join(paths[:limit])
    return shown if len(paths) <= limit else f"{shown} and {len(paths) - limit} more"


def cronjob_patch(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A JSON Patch that replaces the spec wholesale and restores our metadata.

    Labels and annotations others added are kept; ours win where they collide.
    """
    live_meta = existing.get("metadata", {})
    annotations = dict(live_meta.get("annotations") or {})
    annotations.update(desired["metadata"]["annotations"])
    labels = dict(live_meta.get("labels") or {})
    labels.update(desired["metadata"]["labels"])
    return [
        {"op": "add", "path": "/metadata/labels", "value": labels},
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
        {
            "op": "add",
            "path": "/metadata/ownerReferences",
            "value": desired["metadata"].get("ownerReferences", []),
        },
        {"op": "replace", "path": "/spec", "value": desired["spec"]},
    ]
