"""Bearer-token authentication: HS256 shared secret or asymmetric keys from a JWKS URL.

Supabase-compatible claims: ``sub`` is the user id and ``aud`` is ``authenticated``
by default. The JWKS is fetched with the service's own ``httpx.AsyncClient``
(never a blocking client on the event loop), cached for ``AUTH_JWKS_CACHE_SECONDS``,
and refetched early when a token names an unknown ``kid`` — that is how key
rotation shows up — but such early refetches happen at most once per
``_MIN_REFRESH_SECONDS``, so a flood of forged kids cannot hammer the identity provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from .errors import AuthenticationError, JWKSUnavailable
from .settings import Settings

logger = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "EdDSA")
_MIN_REFRESH_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's subject (or the local user with auth disabled)."""

    user_id: str
    claims: dict[str, Any]
    authenticated: bool


class JWKSCache:
    """Signing keys by ``kid``, refreshed on expiry or on an unknown kid."""

    def __init__(self, url: str, client: httpx.AsyncClient, ttl_seconds: float) -> None:
        self._url = url
        self._client = client
        self._ttl = ttl_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._last_forced = float("-inf")
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        try:
            response = await self._client.get(self._url, timeout=10.0)
            response.raise_for_status()
            keyset = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            raise JWKSUnavailable(f"cannot load signing keys: {type(exc).__name__}") from exc
        self._keys = {key.key_id: key for key in keyset.keys if key.key_id}
        self._fetched_at = time.monotonic()
        logger.info("loaded %d signing key(s) from the JWKS", len(self._keys))

    async def key(self, kid: str) -> jwt.PyJWK:
        if kid in self._keys and time.monotonic() - self._fetched_at < self._ttl:
            return self._keys[kid]
        async with self._lock:
            now = time.monotonic()
            if now - self._fetched_at >= self._ttl:
                await self._refresh()
            elif kid not in self._keys and now - self._last_forced >= _MIN_REFRESH_SECONDS:
                # An unknown kid is how a key rotation shows up; refetch, but rarely.
                self._last_forced = now
                await self._refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise AuthenticationError("token signed with an unknown key") from None


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal`."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._secret = settings.auth_jwt_secret.get_secret_value()
        self._jwks = (
            JWKSCache(settings.auth_jwks_url, http, settings.auth_jwks_cache_seconds)
            if settings.auth_jwks_url
            else None
        )

    @property
    def disabled(self) -> bool:
        return self._settings.auth_mode == "disabled"

    async def authenticate(self, authorization: str | None) -> Principal:
        if self.disabled:
            return Principal(self._settings.local_user_id, {}, authenticated=False)
        if not authorization:
            raise AuthenticationError("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("expected 'Authorization: Bearer <token>'")
        claims = await self.verify(token.strip())
        return Principal(str(claims["sub"]), claims, authenticated=True)

    async def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError("malformed token") from exc
        alg = header.get("alg")
        key: Any
        if alg == "HS256" and self._secret:
            key, algorithms = self._secret, ["HS256"]
        elif alg in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str):
                raise AuthenticationError("token has no key id")
            key, algorithms = (await self._jwks.key(kid)).key, [alg]
        else:
            raise AuthenticationError(f"token algorithm {alg!r} is not accepted")
        s = self._settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=s.auth_audience or None,
                issuer=s.auth_issuer or None,
                leeway=s.auth_leeway_seconds,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": bool(s.auth_audience),
                    "verify_iss": bool(s.auth_issuer),
                },
            )
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(f"invalid token: {type(exc).__name__}") from exc
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthenticationError("token subject is empty")
        return claims
