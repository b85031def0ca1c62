"""The kopf peering object of a replicated operator (``PEERING_NAME``).

kopf keeps its peers' keep-alives in the ``status`` of a ``ClusterKopfPeering`` (an
operator watching every namespace) or of a ``KopfPeering`` in each watched namespace, but
never creates that object. The chart ships the CRDs; the operator creates its own object
(or objects) in its startup handler (``handlers.connect``, with the client the handlers share),
which kopf runs before its peering starts, so two replicas share it from their first keep-alive.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ragkeeper_operator.kube import Conflict, KubeClient
from ragkeeper_operator.settings import OperatorSettings

GROUP_VERSION = "kopf.dev/v1"


def peering_objects(settings: OperatorSettings) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, body) of each peering object kopf will use; none when standalone."""
    name = settings.peering_name
    if not name:
        return []
    if settings.clusterwide:
        body = {
            "apiVersion": GROUP_VERSION,
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
        return [(f"/apis/{GROUP_VERSION}/clusterkopfpeerings", body)]
    return [
        (
            f"/apis/{GROUP_VERSION}/namespaces/{namespace}/kopfpeerings",
            {
                "apiVersion": GROUP_VERSION,
                "kind": "KopfPeering",
                "metadata": {"name": name, "namespace": namespace},
            },
        )
        for namespace in settings.watch_namespaces
    ]


async def ensure_peering(kube: KubeClient, settings: OperatorSettings) -> None:
    """Create the peering objects that do not exist yet (409: a peer made it first)."""
    for path, body in peering_objects(settings):
        with contextlib.suppress(Conflict):
            await kube.request("POST", path, body)
