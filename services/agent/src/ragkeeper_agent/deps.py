"""FastAPI dependencies: the app's services, the caller, and :class:`RateLimit`, which every
limited route's input passes through.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Request, Security
from fastapi.openapi.models import HTTPBearer
from fastapi.security.base import SecurityBase

from .audit import current_client_ip, set_user
from .auth import Principal
from .errors import AuthenticationError, JWKSUnavailable, PermissionDenied
from .logs import request_id_var
from .services import Services


async def get_services(request: Request) -> Services:
    # ``async`` on purpose: FastAPI runs plain ``def`` dependencies in a worker thread.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def _route(request: Request) -> str:
    return str(getattr(request.scope.get("route"), "path", request.url.path))


class BearerToken(SecurityBase):
    """The ``Authorization`` header as it came (``auth.py`` parses and checks it), documented
    as the API's security scheme: a bearer JWT."""

    def __init__(self) -> None:
        self.model = HTTPBearer(
            bearerFormat="JWT",
            description="`Authorization: Bearer <JWT>`: HS256 (AUTH_JWT_SECRET) or a key of "
            "AUTH_JWKS_URL; `sub` is the user. Not checked with AUTH_MODE=disabled.",
        )
        self.scheme_name = "bearer"

    async def __call__(self, request: Request) -> str | None:
        return request.headers.get("authorization")


async def get_principal(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str | None, Security(BearerToken())],
) -> Principal:
    """The caller, or 401; an IP with AUTH_FAILURES_PER_MINUTE failures in the last minute
    gets 429 before its token is looked at, whether that token is valid or not."""
    if services.auth.disabled:
        principal = await services.auth.authenticate(authorization)
        set_user(principal.user_id)
        return principal
    key = f"authfail:{current_client_ip()}"
    await services.auth_failures.check(key, _route(request))
    try:
        principal = await services.auth.authenticate(authorization)
    except JWKSUnavailable:
        raise  # 503: the identity provider's fault, not the caller's
    except AuthenticationError:
        await services.auth_failures.admit(key, _route(request), request_id_var.get())
        raise
    set_user(principal.user_id)
    return principal


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


BodyT = TypeVar("BodyT")


@dataclass(frozen=True, slots=True)
class Acting(Generic[BodyT]):
    """A rate-limited route's validated input: the user it acts for and the request body."""

    user_id: str
    body: BodyT


class RateLimit:
    """Dependency that counts a request against its user's sliding window (429 when full).

    ``resolve`` is the route's own dependency: it authenticates the caller, receives the
    validated body and makes the route's checks (403, 422), returning an :class:`Acting`.
    It runs first, so a request refused with 401, 403 or 422 never uses up the window. A
    limited route takes its input as ``Annotated[Acting[Body], Depends(RateLimit(resolve))]``,
    so it cannot reach the input without being admitted; ``tests/agent/test_rate_limit_routes.py``
    fails for any route that neither does this nor is listed there as exempt.
    """

    def __init__(self, resolve: Callable[..., Awaitable[Acting[Any]]]) -> None:
        self.resolve = resolve
        # FastAPI reads a dependency's parameters from its signature; ``acting`` comes from
        # this route's own resolver, which a fixed annotation on ``__call__`` could not name.
        keyword = inspect.Parameter.KEYWORD_ONLY
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter("request", keyword, annotation=Request),
                inspect.Parameter("services", keyword, annotation=ServicesDep),
                inspect.Parameter(
                    "acting", keyword, annotation=Annotated[Acting[Any], Depends(resolve)]
                ),
            ]
        )

    async def __call__(
        self, *, request: Request, services: Services, acting: Acting[BodyT]
    ) -> Acting[BodyT]:
        route = _route(request)
        await services.limiter.admit(acting.user_id, route, request_id_var.get())
        return acting
