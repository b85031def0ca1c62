"""FastAPI dependency aliases (the full-stack template's ``api/deps.py`` habit)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from .auth import Principal
from .errors import PermissionDenied
from .logs import request_id_var
from .services import Services


async def get_services(request: Request) -> Services:
    # ``async`` on purpose: FastAPI runs plain ``def`` dependencies in a worker thread.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(
    services: ServicesDep, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    return await services.auth.authenticate(authorization)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def acting_user(principal: Principal, body_user_id: str | None) -> str:
    """The user a request acts for: the token's subject; a different body user_id is 403.

    With authentication disabled (local stack only) the body's user_id is trusted.
    """
    if not principal.authenticated:
        return body_user_id or principal.user_id
    if body_user_id is not None and body_user_id != principal.user_id:
        raise PermissionDenied("user_id does not match the authenticated user")
    return principal.user_id


async def admit(services: Services, user_id: str, request: Request) -> None:
    """Count the request against the user's sliding window (429 when full)."""
    route = getattr(request.scope.get("route"), "path", request.url.path)
    await services.limiter.admit(user_id, route, request_id_var.get())
