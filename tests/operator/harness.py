"""An in-process Kubernetes API for the operator: kmock's emulator plus the bits it lacks.

``kmock.KubernetesEmulator`` 0.8 stores objects and streams watch events over
real HTTP, but assigns no uid/resourceVersion/generation and has no
controllers. ``ApiServer`` fills in the metadata the API server would (so
kopf's consistency tracking and owner references work), and the helpers here
play the CronJob/Job controllers' part: create a finished Pod, mark a Job done.

Used by the end-to-end tests and by ``bench/operator.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import jsonpatch
import kmock
import kopf

from ragkeeper_operator import builders, handlers
from ragkeeper_operator.metrics import OperatorMetrics
from ragkeeper_operator.reconcile import Runtime
from ragkeeper_operator.settings import OperatorSettings

DS = "ragkeeper.dev/v1alpha1/datasources"
DS_PATH = "/apis/ragkeeper.dev/v1alpha1/namespaces/{ns}/datasources"
MERGE = {"Content-Type": "application/merge-patch+json"}
# The kubeconfig's bearer token: every request carrying it came from the operator (kopf or
# its own client); the tests playing the user and the controllers send no token.
OPERATOR_TOKEN = "emulator-token"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class ApiServer(kmock.KubernetesEmulator):
    """The emulator, plus what an API server adds: uid, resourceVersion, generation, names.

    Lists report the current resourceVersion and a watch started from it does
    not replay objects that were already listed, so kopf sees each state once.
    """

    _last_version = 0
    namespaces: tuple[str, ...] = ("default",)
    # kmock matches each request against its whole request log (quadratic over a long run),
    # so it sees a recent window only; ``log`` keeps every request for the tests to count.
    request_history: int | None = 64

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._inflight: dict[int, Any] = {}

    @property
    def log(self) -> Sequence[Any]:
        """Every request served so far, oldest first (kmock ``Request`` objects)."""
        return self._requests

    def _next_version(self) -> str:
        type(self)._last_version += 1
        return str(type(self)._last_version)

    async def _handle(self, request: Any) -> Any:
        self._inflight[id(request)] = request
        try:
            return await self._serve(request)
        finally:
            self._inflight.pop(id(request), None)

    async def _serve(self, request: Any) -> Any:
        data = request.data
        if request.resource is not None and request.action == kmock.action.CREATE:
            if isinstance(data, dict):
                meta = data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:8]
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta["generation"] = 1
                meta["resourceVersion"] = self._next_version()
        elif request.resource is not None and request.action == kmock.action.UPDATE:
            version = self._next_version()
            key = (request.resource, request.namespace, request.name)
            current: Any = self.objects[key].raw if key in self.objects else {}  # noqa: SIM401
            generation = int((current.get("metadata") or {}).get("generation") or 1)
            if isinstance(data, dict):
                touches_spec = "spec" in data and request.subresource is None
                meta = data.setdefault("metadata", {})
                # A resourceVersion in the body is a precondition, as on the API server.
                expected = meta.get("resourceVersion")
                held = (current.get("metadata") or {}).get("resourceVersion")
                if expected is not None and str(expected) != str(held):
                    raise kmock.KubernetesError(
                        status=409, reason="Conflict", message="the object has been modified"
                    )
                meta["resourceVersion"] = version
                if touches_spec:
                    meta["generation"] = generation + 1
            elif isinstance(data, list):
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
                if any(str(op.get("path", "")).startswith("/spec") for op in data):
                    data.append(
                        {"op": "add", "path": "/metadata/generation", "value": generation + 1}
                    )
        elif request.resource is not None and request.action == kmock.action.DELETE:
            key = (request.resource, request.namespace, request.name)
            if key in self.objects and not self.objects[key].deleted:
                self.objects[key].patch({"metadata": {"resourceVersion": self._next_version()}})
        try:
            return await super()._handle(request)
        except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as exc:
            # The API server answers a failed JSON Patch "test" op with 422; kopf re-reads then.
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc

    async def __call__(self, raw_request: Any) -> Any:
        # kmock 0.8 cannot parse /api/v1/namespaces (it reads "namespaces" as the namespace
        # prefix), which kopf lists and watches when it scans namespaces (WATCH_NAMESPACES set
        # and scanning on; the operator turns scanning off then): serve it here.
        if raw_request.path == "/api/v1/namespaces":
            # Logged like every other request, so the RBAC check sees it.
            self._requests.append(
                kmock.Request(
                    id=len(self._requests),
                    method=raw_request.method,
                    url=raw_request.url,
                    params=dict(raw_request.query),
                    headers=dict(raw_request.headers),
                )
            )
            return await self._serve_namespaces(raw_request)
        return await super().__call__(raw_request)

    # kmock finds the object of a get/create/patch/delete by scanning every stored object of
    # every resource: O(objects) per request, quadratic over a run with thousands of objects.
    # The key is known, so look it up; anything unusual falls back to kmock's own path.
    def _stored(self, request: Any, namespace: str | None, name: str | None) -> Any:
        if request.resource is None or name is None:
            return None
        key = (request.resource, namespace, name)
        return self._objects[key] if key in self._objects else None  # noqa: SIM401 - no .get

    async def _serve_fetch(self, request: Any) -> Any:
        obj = self._stored(request, request.namespace, request.name)
        if obj is None or obj.deleted:
            return await super()._serve_fetch(request)
        return obj.raw

    async def _serve_create(self, request: Any) -> Any:
        meta = (request.data or {}).get("metadata") or {}
        namespace = request.namespace or meta.get("namespace")
        obj = self._stored(request, namespace, request.name or meta.get("name"))
        if obj is None:
            return await super()._serve_create(request)
        return obj.raw

    async def _serve_update(self, request: Any) -> Any:
        obj = self._stored(request, request.namespace, request.name)
        if obj is None:
            return await super()._serve_update(request)
        return obj.last.raw

    async def _serve_delete(self, request: Any) -> Any:
        obj = self._stored(request, request.namespace, request.name)
        if obj is None:
            return await super()._serve_delete(request)
        return obj.last.raw

    def __iter__(self) -> Any:
        # Every request is matched against the request log; a window (plus the requests
        # still being served) keeps that cheap.
        history = self._requests
        if self.request_history is None:
            yield from history
            return
        window = history[-self.request_history :]
        yield from window
        seen = {id(request) for request in window}
        yield from (r for key, r in self._inflight.items() if key not in seen)

    async def _serve_namespaces(self, raw_request: Any) -> Any:
        items = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "uid": name}}
            for name in self.namespaces
        ]
        if raw_request.query.get("watch") != "true":
            version = str(type(self)._last_version)
            return aiohttp.web.json_response(
                {"metadata": {"resourceVersion": version}, "items": items}
            )
        response = aiohttp.web.StreamResponse()
        await response.prepare(raw_request)
        await asyncio.Event().wait()  # no namespace ever changes; kopf disconnects on exit
        return response

    async def _serve_list(self, request: Any) -> Any:
        payload: Any = await super()._serve_list(request)
        payload["metadata"] = {"resourceVersion": str(type(self)._last_version)}
        return payload

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        since = _version(request.params.get("resourceVersion"))
        async for event in super()._serve_watch(request):
            if since is not None and isinstance(event, dict) and event.get("type") == "ADDED":
                listed = _version(event["object"].get("metadata", {}).get("resourceVersion"))
                if listed is not None and listed <= since:
                    continue
            yield event


def load_builtin_resources(api: kmock.KubernetesEmulator) -> None:
    """``resources.load_bundled()`` without its deprecated ``importlib.resources`` call."""
    bundled = resources.files("kmock._internal").joinpath("resources.json.gz").read_bytes()
    api.resources.load_data(gzip.decompress(bundled))


def datasource_resource_info() -> kmock.ResourceInfo:
    return kmock.ResourceInfo(
        kind="DataSource",
        singular="datasource",
        namespaced=True,
        shortnames={"dsrc"},
        categories={"ragkeeper"},
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )


@dataclass
class Cluster:
    """A running emulator and an HTTP client for playing the user and the controllers."""

    api: ApiServer
    url: str
    http: aiohttp.ClientSession
    kubeconfig: Path

    def obj(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self.api.objects or self.api.objects[key].deleted:
            return None
        result: dict[str, Any] = json.loads(json.dumps(self.api.objects[key].raw))
        return result

    def all(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        wanted = kmock.resource(resource)
        return [
            json.loads(json.dumps(obj.raw))
            for (res, ns, _), obj in self.api.objects.items()
            if res == wanted and not obj.deleted and (namespace is None or ns == namespace)
        ]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.all("v1/events") if e["involvedObject"].get("name") == name]

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        async with self.http.request(method, self.url + path, json=body, **kw) as response:
            payload = await response.json()
            if response.status >= 300:
                raise AssertionError(f"{method} {path}: {response.status} {payload}")
            return payload  # type: ignore[no-any-return]

    async def create(self, resource_path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.call("POST", resource_path, dict(body))

    async def create_datasource(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.create(DS_PATH.format(ns=body["metadata"]["namespace"]), body)

    async def patch_datasource(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        path = DS_PATH.format(ns=namespace) + f"/{name}"
        return await self.call("PATCH", path, dict(patch), headers=MERGE)

    async def delete_datasource(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.call("DELETE", DS_PATH.format(ns=namespace) + f"/{name}")

    async def create_secret(
        self, namespace: str, name: str, keys: list[str], labels: Mapping[str, str] | None = None
    ) -> None:
        data = dict.fromkeys(keys, "c2VjcmV0")
        metadata = {"name": name, "labels": dict(labels or {})}
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": data}
        await self.create(f"/api/v1/namespaces/{namespace}/secrets", body)

    async def create_pvc(self, namespace: str, name: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
        await self.create(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", body)

    async def finish_pod(
        self,
        job: Mapping[str, Any],
        *,
        exit_code: int,
        message: str,
        pod_name: str | None = None,
        finished_at: str | None = None,
        started_at: str | None = None,
    ) -> dict[str, Any]:
        """Play the Job controller and kubelet: a Pod of ``job`` that has terminated."""
        meta = job["metadata"]
        template = job["spec"]["template"]
        name = pod_name or f"{meta['name']}-{uuid.uuid4().hex[:5]}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": {**template["metadata"]["labels"], "job-name": meta["name"]},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta.get("uid", str(uuid.uuid4())),
                        "controller": True,
                    }
                ],
            },
            "spec": template["spec"],
            "status": {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": builders.CONTAINER,
                        "ready": False,
                        "restartCount": 0,
                        "image": template["spec"]["containers"][0]["image"],
                        "imageID": "",
                        "state": {
                            "terminated": {
                                "exitCode": exit_code,
                                "reason": "Completed" if exit_code == 0 else "Error",
                                "message": message,
                                "finishedAt": finished_at or _now(),
                                **({"startedAt": started_at} if started_at else {}),
                            }
                        },
                    }
                ],
            },
        }
        return await self.create(f"/api/v1/namespaces/{meta['namespace']}/pods", pod)

    async def complete_job(self, namespace: str, name: str, *, failed: bool = False) -> None:
        """Play the Job controller: mark a Job Complete (or Failed)."""
        condition = {"type": "Failed" if failed else "Complete", "status": "True"}
        counts = {"failed": 1} if failed else {"succeeded": 1}
        await self.call(
            "PATCH",
            f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status",
            {"status": {**counts, "conditions": [condition]}},
            headers=MERGE,
        )


@asynccontextmanager
async def cluster(tmp: Path) -> AsyncIterator[Cluster]:
    """An emulator on 127.0.0.1 with the built-in resources and the DataSource CRD."""
    async with ApiServer() as api, kmock.Server(api) as server:
        load_builtin_resources(api)
        api.resources[DS] = datasource_resource_info()
        url = str(server.url).rstrip("/")
        kubeconfig = tmp / "kubeconfig.json"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulator", "cluster": {"server": url}}],
                    "users": [{"name": "tester", "user": {"token": OPERATOR_TOKEN}}],
                    "contexts": [
                        {"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}
                    ],
                    "current-context": "emulator",
                }
            )
        )
        async with aiohttp.ClientSession() as http:
            yield Cluster(api=api, url=url, http=http, kubeconfig=kubeconfig)


@asynccontextmanager
async def running_operator(settings: OperatorSettings) -> AsyncIterator[Runtime]:
    """The real kopf runtime with the operator's handlers, until the block exits.

    kopf treats its event loop as its own (on exit it cancels every task created
    after it started), so it runs in a thread with its own loop, as in production;
    it reaches the emulator over HTTP like any API client.
    """
    runtime = Runtime(settings=settings, metrics=OperatorMetrics())
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    settings=handlers.configure_kopf(settings),
                    standalone=True,
                    clusterwide=settings.clusterwide,
                    namespaces=list(settings.watch_namespaces),
                    memo=kopf.Memo(runtime=runtime),
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="kopf-operator", daemon=True)
    thread.start()
    await asyncio.to_thread(ready.wait, 30)
    if failure:
        raise failure[0]
    try:
        yield runtime
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
        if failure:
            raise failure[0]


async def eventually(
    probe: Callable[[], Any] | Callable[[], Awaitable[Any]], timeout: float = 15.0
) -> Any:
    """Poll ``probe`` until it returns something truthy (a condition wait, not a sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {probe}")
        await asyncio.sleep(0.02)
