"""The caller's own long-term memories (docs/agent.md, "Memory"): list them, forget one.

Another user's memory is indistinguishable from one that does not exist (404). With
MEMORY_ENABLED=false both routes answer 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from ..deps import PrincipalDep, ServicesDep, acting_user
from ..errors import NotFound
from ..memory import MemoryStore
from ..openapi import AUTHENTICATED, responses
from ..schemas import MAX_ID_CHARS, MemoryDeleted, MemoryOut
from ..services import Services
from ..text import Text
from .conversations import MAX_OFFSET

router = APIRouter(responses=responses(*AUTHENTICATED))


def _memory(services: Services) -> MemoryStore:
    if services.memory is None:
        raise NotFound("memory is off (MEMORY_ENABLED=false)")
    return services.memory


@router.get("/api/memories", responses=responses(403, 404))
async def list_memories(
    principal: PrincipalDep,
    services: ServicesDep,
    user_id: Annotated[Text | None, Query(max_length=MAX_ID_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[MemoryOut]:
    """The caller's memories, most recently saved first."""
    owner = acting_user(principal, user_id)
    rows = await _memory(services).list_for_user(owner, limit=limit, offset=offset)
    return [
        MemoryOut(
            id=m.id,
            content=m.content,
            session_id=m.session_id,
            created_at=m.created_at,
            updated_at=m.updated_at,
        )
        for m in rows
    ]


@router.delete("/api/memories/{memory_id}", responses=responses(403, 404))
async def delete_memory(
    principal: PrincipalDep,
    services: ServicesDep,
    memory_id: Annotated[int, Path(ge=1, le=MAX_OFFSET)],
    user_id: Annotated[Text | None, Query(max_length=MAX_ID_CHARS)] = None,
) -> MemoryDeleted:
    """Forget one of the caller's memories (404: the caller has none with this id)."""
    owner = acting_user(principal, user_id)
    if not await _memory(services).delete(owner, memory_id):
        raise NotFound("no such memory")
    return MemoryDeleted(id=memory_id, deleted=True)
