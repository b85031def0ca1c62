"""A small asynchronous Kubernetes client speaking plain JSON dicts.

kopf watches and patches the DataSources itself; the operator's own calls
(Secrets, PVCs, CronJobs, Jobs, DataSource status) go through this client. It
reuses the official client's configuration loading (in-cluster service
account, or a kubeconfig) and transport (``kubernetes.aio``) but skips its
model classes: builders produce dicts and the status logic reads dicts, so
(de)serialising models would only cost time.

The same configuration feeds kopf's login handler, so the operator and kopf
always talk to the same API server with the same credentials.

Errors::

    KubeError              any non-2xx answer (``status`` holds the HTTP code)
    ├── NotFound           404
    └── Conflict           409 (already exists)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import kopf
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig

logger = logging.getLogger(__name__)

# kubernetes.aio ships without annotations; these are the few entry points we call.
_Untyped = Callable[..., Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class SecretInfo:
    """What the operator reads of a Secret: its keys and labels, never its values."""

    keys: frozenset[str]
    labels: Mapping[str, str]


class KubeError(Exception):
    """The API server answered with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class NotFound(KubeError):
    """The object (or its resource) does not exist."""


class Conflict(KubeError):
    """The object already exists, or changed under us."""


async def load_configuration(kubeconfig: str | None) -> kclient.Configuration:
    """In-cluster service account when running in a Pod, else the kubeconfig file."""
    configuration = kclient.Configuration()
    try:
        cast(_Untyped, kconfig.load_incluster_config)(client_configuration=configuration)
        logger.info("using the in-cluster service account")
    except kconfig.ConfigException:
        await cast(_Untyped, kconfig.load_kube_config)(
            config_file=kubeconfig, client_configuration=configuration
        )
        logger.info("using kubeconfig %s", kubeconfig or "~/.kube/config")
    return configuration


async def connection_info(configuration: kclient.Configuration) -> kopf.ConnectionInfo:
    """The same credentials, in the form kopf's login handler returns."""
    header = await configuration.get_api_key_with_prefix("BearerToken")
    scheme, token = (header.split(" ", 1) + [""])[:2] if header else (None, None)
    if scheme and not token:
        scheme, token = None, scheme
    return kopf.ConnectionInfo(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        username=configuration.username or None,
        password=configuration.password or None,
    )


def _path(group: str, version: str, plural: str, namespace: str, name: str | None) -> str:
    root = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    path = f"{root}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class KubeClient:
    """JSON-in, JSON-out calls for the few resources the operator touches."""

    def __init__(self, configuration: kclient.Configuration) -> None:
        self._api = kclient.ApiClient(configuration)

    async def close(self) -> None:
        await cast(_Untyped, self._api.close)()

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send one request; raise ``KubeError`` (or a subclass) on a non-2xx answer."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method_, url, headers_, body_, _ = await self._api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = await self._api.call_api(method_, url, headers_, body_)
        raw: bytes = await cast(_Untyped, response.read)()
        if not 200 <= response.status < 300:
            try:
                message = str(json.loads(raw).get("message", raw[:200]))
            except (ValueError, AttributeError):
                message = raw[:200].decode(errors="replace")
            error = {404: NotFound, 409: Conflict}.get(response.status, KubeError)
            raise error(response.status, message)
        result = json.loads(raw) if raw else {}
        return result if isinstance(result, dict) else {}

    async def get(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """The object, or ``None`` when it does not exist."""
        try:
            return await self.request("GET", _path(group, version, plural, namespace, name))
        except NotFound:
            return None

    async def list(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        *,
        selector: str | None = None,
        page: int = 500,
    ) -> list[dict[str, Any]]:
        """Every object of a resource in one namespace (``None``: all), page by page."""
        root = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        path = f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"
        query = {"limit": str(page), **({"labelSelector": selector} if selector else {})}
        items: list[dict[str, Any]] = []
        while True:
            answer = await self.request("GET", path, query=query)
            items.extend(answer.get("items") or [])
            token = (answer.get("metadata") or {}).get("continue")
            if not token:
                return items
            query["continue"] = str(token)

    async def create(
        self, group: str, version: str, plural: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        namespace = str(body["metadata"]["namespace"])
        return await self.request("POST", _path(group, version, plural, namespace, None), body)

    async def patch(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch with a mapping, JSON-patch with a list of operations."""
        path = _path(group, version, plural, namespace, name)
        if subresource:
            path = f"{path}/{subresource}"
        content_type = MERGE_PATCH if isinstance(patch, Mapping) else JSON_PATCH
        return await self.request("PATCH", path, patch, content_type)

    # -- the handful of objects the operator reads ---------------------------------------------
    async def secret_info(self, namespace: str, name: str) -> SecretInfo | None:
        """The keys and labels of a Secret (never its values), or ``None`` if it is missing."""
        secret = await self.get("", "v1", "secrets", namespace, name)
        if secret is None:
            return None
        keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
        labels = (secret.get("metadata") or {}).get("labels") or {}
        return SecretInfo(keys=frozenset(keys), labels={str(k): str(v) for k, v in labels.items()})

    async def pvc_exists(self, namespace: str, name: str) -> bool:
        return await self.get("", "v1", "persistentvolumeclaims", namespace, name) is not None
