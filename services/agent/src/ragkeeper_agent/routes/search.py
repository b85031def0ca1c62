"""``POST /api/search``: retrieval without the model (debugging, evaluation, other tools)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..agent import retrieve
from ..deps import PrincipalDep, ServicesDep, admit
from ..schemas import PassageOut, SearchRequest

router = APIRouter()


@router.post("/api/search")
async def search(
    body: SearchRequest, principal: PrincipalDep, services: ServicesDep, request: Request
) -> list[PassageOut]:
    await admit(services, principal.user_id, request)
    passages = await retrieve(
        services.deps(),
        body.query,
        k=body.k,
        pipeline_id=body.pipeline_id,
        metadata_filter=body.metadata_filter,
    )
    return [
        PassageOut(
            document_id=p.document_id, title=p.title, url=p.url, score=p.score, content=p.content
        )
        for p in passages
    ]
