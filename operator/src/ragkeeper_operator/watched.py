"""The DataSources and owned CronJobs as the operator's watches deliver them.

Handlers read a DataSource or its CronJob from here instead of with a GET. A store is
primed with one LIST of its resource when the operator starts (cluster-wide, or one per
watched namespace) and kept current by the watch-event handlers (``handlers``), so a
restart finds every existing CronJob without reading it. An entry may lag the operator's
own write by one watch event; callers handle that (a create meets a 409 and reads).

kopf's indexes would hold the same, but kopf keeps every handler waiting until each
listed object is indexed and wakes all the waiting ones at each step: on a restart that
is quadratic in the number of objects (2,000 DataSources: 49 s before they were resumed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ragkeeper_operator.kube import KubeClient

Key = tuple[str, str]


class Watched:
    """Objects of one resource by (namespace, name), as last listed or watched.

    Each is kept as its JSON text, a fifth of the memory of the parsed dict (a CronJob: about
    3 KB against 15 KB), and parsed when asked for, which a handler does once per reconcile.
    """

    def __init__(
        self,
        resource: tuple[str, str, str],
        selector: str | None = None,
        unread: tuple[str, ...] = (),
    ) -> None:
        self.resource = resource
        self.selector = selector
        self.unread = unread  # top-level fields no reader needs (a CronJob's status)
        self.primed = False
        self._objects: dict[Key, str] = {}

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        text = self._objects.get((namespace, name))
        return None if text is None else dict(json.loads(text))

    def put(self, body: Mapping[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        # managedFields is never read and is the bulk of a body from a real API server.
        kept = {name: body[name] for name in body if name not in self.unread}
        kept["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
        self._objects[key] = json.dumps(kept, separators=(",", ":"))

    def drop(self, namespace: str, name: str) -> None:
        self._objects.pop((namespace, name), None)

    async def prime(self, kube: KubeClient, namespaces: tuple[str, ...]) -> None:
        """Fill the store with one LIST per namespace (``()``: one across all of them)."""
        for namespace in namespaces or (None,):
            for body in await kube.list(*self.resource, namespace, selector=self.selector):
                self.put(body)
        self.primed = True
