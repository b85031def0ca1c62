"""``POST /api/search``: retrieval without the model (debugging, evaluation, other tools)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from ..agent import retrieve
from ..deps import Acting, PrincipalDep, RateLimit, ServicesDep
from ..errors import too_long
from ..openapi import AUTHENTICATED, responses
from ..schemas import PassageOut, SearchRequest

router = APIRouter(responses=responses(*AUTHENTICATED))


async def search_request(
    body: SearchRequest, principal: PrincipalDep, services: ServicesDep
) -> Acting[SearchRequest]:
    """Searches count against the caller's own window (the body names no user); the query
    is within ``MAX_QUERY_CHARS`` as well as the schema's limit."""
    if len(body.query) > services.settings.max_query_chars:
        raise too_long(("body", "query"), services.settings.max_query_chars, "MAX_QUERY_CHARS")
    return Acting(principal.user_id, body)


@router.post("/api/search")
async def search(
    admitted: Annotated[Acting[SearchRequest], Depends(RateLimit(search_request))],
    services: ServicesDep,
) -> list[PassageOut]:
    body = admitted.body
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
