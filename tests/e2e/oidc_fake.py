"""A small OpenID Connect provider on 127.0.0.1: the external identity provider, faked at its boundary.

It speaks the parts of the protocol a public browser client uses, strictly enough
that a wrong client fails here as it would at Keycloak or Auth0:

- ``GET /.well-known/openid-configuration``: discovery, with the endpoints below.
- ``GET /authorize``: approves at once (no login form) and redirects back with
  ``code`` and ``state``; with :attr:`OidcProvider.deny` it answers
  ``error=access_denied``, with :attr:`OidcProvider.answer_state` it returns a state
  of its own (what a forged callback looks like to the page).
- ``POST /token``: ``authorization_code`` checks the client id, the redirect URI and
  that the ``code_verifier``'s S256 is the challenge the code was issued for (each
  code works once); ``refresh_token`` rotates the refresh token. Answers carry an
  RS256 access token for :attr:`OidcProvider.audience` and an ID token with the nonce.
- ``POST /revoke`` (RFC 7009) and ``GET /jwks`` (the public key the agent verifies with).

CORS is allowed for 127.0.0.1 origins, as real providers allow the public client's origin.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse, Response

KID = "fake-oidc-1"
VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")


def s256(verifier: str) -> str:
    """PKCE's S256 code challenge of a code verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Grant:
    """What an authorization code was issued for."""

    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str


@dataclass
class OidcProvider:
    """State of the fake provider; :attr:`issuer` is set once it is served."""

    client_id: str
    audience: str
    subject: str = "sso-user-1"
    email: str = "sam@example.org"
    token_seconds: int = 3600
    issuer: str = ""
    deny: bool = False
    answer_state: str | None = None
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    authorizations: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    issued: list[dict[str, Any]] = field(default_factory=list)
    codes: dict[str, Grant] = field(default_factory=dict)
    refresh_tokens: set[str] = field(default_factory=set)

    def _sign(self, claims: dict[str, Any]) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "sub": self.subject, "iat": now, **claims}
        payload["jti"] = secrets.token_hex(8)  # no two tokens alike, even within a second
        payload.setdefault("exp", now + self.token_seconds)
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": KID})

    def tokens(self, nonce: str | None) -> dict[str, Any]:
        refresh = secrets.token_urlsafe(24)
        self.refresh_tokens.add(refresh)
        id_claims: dict[str, Any] = {"aud": self.client_id, "email": self.email}
        if nonce is not None:
            id_claims["nonce"] = nonce
        answer = {
            "access_token": self._sign({"aud": self.audience, "scope": "openid profile email"}),
            "id_token": self._sign(id_claims),
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.token_seconds,
        }
        self.issued.append(answer)
        return answer

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (python-multipart is not installed)."""
    return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))


def _error(error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)


def fake_oidc(state: OidcProvider) -> FastAPI:
    app = FastAPI()
    app.add_middleware(
        CORSMiddleware,
        allow_origin_regex=r"http://127\.0\.0\.1:\d+",
        allow_methods=["GET", "POST"],
        allow_headers=["content-type", "accept"],
    )

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return {
            "issuer": state.issuer,
            "authorization_endpoint": f"{state.issuer}/authorize",
            "token_endpoint": f"{state.issuer}/token",
            "revocation_endpoint": f"{state.issuer}/revoke",
            "jwks_uri": f"{state.issuer}/jwks",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        return state.jwks()

    @app.get("/authorize")
    async def authorize(request: Request) -> Response:
        q = dict(request.query_params)
        state.authorizations.append(q)
        if q.get("client_id") != state.client_id or q.get("response_type") != "code":
            return _error("unauthorized_client", "unknown client or response type")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return _error("invalid_request", "PKCE with S256 is required")
        answer: dict[str, str] = {"state": state.answer_state or q.get("state", "")}
        if state.deny:
            answer |= {"error": "access_denied", "error_description": "The user said no"}
        else:
            code = secrets.token_urlsafe(16)
            state.codes[code] = Grant(
                state.client_id, q["redirect_uri"], q["code_challenge"], q.get("nonce", "")
            )
            answer["code"] = code
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode(answer)}", status_code=302)

    @app.post("/token")
    async def token(request: Request) -> JSONResponse:
        form = await _form(request)
        state.token_requests.append(form)
        if form.get("client_id") != state.client_id:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") not in state.refresh_tokens:
                return _error("invalid_grant", "unknown refresh token")
            state.refresh_tokens.discard(form["refresh_token"])
            return JSONResponse(state.tokens(nonce=None))
        if form.get("grant_type") != "authorization_code":
            return _error("unsupported_grant_type", "authorization_code or refresh_token")
        grant = state.codes.pop(form.get("code", ""), None)
        if grant is None:
            return _error("invalid_grant", "unknown or used code")
        if form.get("redirect_uri") != grant.redirect_uri:
            return _error("invalid_grant", "redirect_uri differs from the authorization request")
        verifier = form.get("code_verifier", "")
        if not VERIFIER.fullmatch(verifier) or s256(verifier) != grant.challenge:
            return _error("invalid_grant", "PKCE verification failed")
        return JSONResponse(state.tokens(nonce=grant.nonce))

    @app.post("/revoke")
    async def revoke(request: Request) -> Response:
        revoked = (await _form(request)).get("token", "")
        state.revoked.append(revoked)
        state.refresh_tokens.discard(revoked)
        return Response(status_code=200)

    return app
