"""Liveness, readiness and metrics (the page at ``/`` lives in ``web.py``).

``/healthz`` only says the process serves requests (no dependencies: a database
outage must not make Kubernetes restart every replica). ``/readyz`` says whether
this replica should get traffic (``readiness.py``: database reachable and schema at the head
migration; 503 with ``Retry-After`` while the database is unreachable, 200 again at the
first probe after it is back; an outage of the embedding or model API does not count). It
needs no token, so it is limited per client IP (``PUBLIC_REQUESTS_PER_MINUTE``).
``/metrics`` exposes the service's own registry: on this app's port only when
``METRICS_PORT`` is 0; otherwise ``app.py`` serves it on that port alone (``metrics_router``
stays off the main app, so an Ingress in front of ``PORT`` cannot publish it).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..audit import current_client_ip
from ..deps import ServicesDep
from ..metrics import REGISTRY

router = APIRouter()
metrics_router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def readyz(services: ServicesDep) -> JSONResponse:
    if services.draining.is_set():
        return JSONResponse({"status": "draining"}, status_code=503)
    services.public_limiter.admit(f"public:{current_client_ip()}", "/readyz")
    answer = await services.readiness.answer()
    return JSONResponse(answer.body, status_code=answer.status_code, headers=answer.headers)


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
