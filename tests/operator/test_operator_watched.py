"""``KubeClient.list`` pages through a LIST; ``Watched`` holds what it listed and watched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp.web

from ragkeeper_operator.kube import KubeClient, load_configuration
from ragkeeper_operator.watched import Watched
from tests.support import LOCALHOST, free_port


def cronjob(namespace: str, name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": {"schedule": "@hourly"}}


async def test_list_follows_continue_tokens_and_primes_the_store(tmp_path: Path) -> None:
    pages = {
        "": ([cronjob("a", "one"), cronjob("a", "two")], "t1"),
        "t1": ([cronjob("b", "three")], ""),
    }
    seen: list[dict[str, str]] = []

    async def serve(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(dict(request.query))
        items, token = pages[request.query.get("continue", "")]
        return aiohttp.web.json_response({"metadata": {"continue": token}, "items": items})

    app = aiohttp.web.Application()
    app.router.add_get("/apis/batch/v1/cronjobs", serve)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, LOCALHOST, port).start()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://{LOCALHOST}:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],  # pragma: allowlist secret
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    kube = KubeClient(await load_configuration(str(tmp_path / "kubeconfig")))
    try:
        store = Watched(("batch", "v1", "cronjobs"), selector="app=x", unread=("status",))
        assert not store.primed
        await store.prime(kube, ())
    finally:
        await kube.close()
        await runner.cleanup()
    assert [q.get("continue") for q in seen] == [None, "t1"]
    assert all(q["labelSelector"] == "app=x" and q["limit"] == "500" for q in seen)
    assert store.primed
    assert store.get("b", "three") == cronjob("b", "three")
    # What no reader needs is not kept: the status given, managedFields always.
    store.put(cronjob("b", "three") | {"status": {"active": []}})
    assert store.get("b", "three") == cronjob("b", "three")
    # A reader gets its own copy: changing it changes nothing held.
    store.get("b", "three")["spec"]["schedule"] = "@daily"  # type: ignore[index]
    assert store.get("b", "three") == cronjob("b", "three")
    managed = cronjob("b", "four")
    managed["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    store.put(managed)
    assert store.get("b", "four") == cronjob("b", "four")
    store.drop("a", "one")
    store.put(cronjob("a", "two") | {"spec": {"schedule": "@daily"}})
    assert store.get("a", "one") is None
    assert store.get("a", "two")["spec"]["schedule"] == "@daily"  # type: ignore[index]
