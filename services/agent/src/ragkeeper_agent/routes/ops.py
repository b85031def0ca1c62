"""Liveness, readiness and metrics (the page at ``/`` lives in ``web.py``).

``/healthz`` only says the process serves requests (no dependencies: a database
outage must not make Kubernetes restart every replica). ``/readyz`` says whether
this replica should get traffic: database reachable and schema at the head
migration (503 with ``Retry-After`` while the database is unreachable, 200 again at the
first probe after it is back; an outage of the embedding or model API does not count).
``/metrics`` exposes the service's own registry: on this app's port only when
``METRICS_PORT`` is 0; otherwise ``app.py`` serves it on that port alone (``metrics_router``
stays off the main app, so an Ingress in front of ``PORT`` cannot publish it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import asyncpg
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ragkeeper_knowledge.errors import KnowledgeError
from ragkeeper_knowledge.migrate import current_revision, head_revision

from ..deps import ServicesDep
from ..errors import RETRY_AFTER_SECONDS
from ..metrics import REGISTRY

logger = logging.getLogger(__name__)
router = APIRouter()
metrics_router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def readyz(services: ServicesDep) -> JSONResponse:
    if services.draining.is_set():
        return JSONResponse({"status": "draining"}, status_code=503)
    try:
        async with asyncio.timeout(3):
            async with services.pool.acquire() as conn:
                revision = await current_revision(cast(asyncpg.Connection, conn))
    except (
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
    ) as exc:
        # Any failure to read the revision takes the replica out; the next probe puts it back.
        logger.warning("not ready: database unreachable (%s)", type(exc).__name__)
        return JSONResponse(
            {"status": "database unreachable"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    try:
        head = head_revision()
    except KnowledgeError:
        return JSONResponse({"status": "migrations unreadable"}, status_code=503)
    if revision != head:
        return JSONResponse(
            {"status": "migrations pending", "revision": revision, "head": head}, status_code=503
        )
    return JSONResponse({"status": "ready", "revision": revision})


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
