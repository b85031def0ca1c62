"""Shared, short-lived reads of the Secrets and PVCs that DataSources depend on.

Every DataSource of a namespace references the same database Secret (and often the same
PVC). Reconciled in a burst (many created at once, an operator restart), each would read
it: ``Lookups`` shares one read per object among every caller within ``ttl`` seconds, and
among concurrent callers while that read is in flight. Only objects that were found are
kept: a missing Secret or PVC is read again on every retry, so a DataSource waiting for it
heals as soon as it appears; a deleted or edited one is noticed at most ``ttl`` later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cachetools import TTLCache

from ragkeeper_operator.kube import KubeClient, SecretInfo

T = TypeVar("T")
Key = tuple[str, str, str]


class Lookups:
    """``KubeClient.secret_info`` and ``pvc_exists``, one read per object per ``ttl``."""

    def __init__(self, kube: KubeClient, ttl: float, maxsize: int = 4096) -> None:
        self._kube = kube
        self._reads: TTLCache[Key, asyncio.Future[Any]] | None = (
            TTLCache(maxsize=maxsize, ttl=ttl) if ttl > 0 else None
        )

    async def secret_info(self, namespace: str, name: str) -> SecretInfo | None:
        return await self._shared(
            ("secrets", namespace, name), lambda: self._kube.secret_info(namespace, name)
        )

    async def pvc_exists(self, namespace: str, name: str) -> bool:
        return await self._shared(
            ("persistentvolumeclaims", namespace, name),
            lambda: self._kube.pvc_exists(namespace, name),
        )

    async def _shared(self, key: Key, read: Callable[[], Awaitable[T]]) -> T:
        if self._reads is None:
            return await read()
        future = self._reads.get(key)
        if future is None:
            future = asyncio.ensure_future(read())
            self._reads[key] = future
        try:
            # shield: one caller cancelled (its handler stopped) leaves the read to the others.
            result: T = await asyncio.shield(future)
        except BaseException:
            self._forget(key, future)
            raise
        if not result:
            self._forget(key, future)
        return result

    def _forget(self, key: Key, future: asyncio.Future[Any]) -> None:
        if self._reads is not None and self._reads.get(key) is future:
            del self._reads[key]
