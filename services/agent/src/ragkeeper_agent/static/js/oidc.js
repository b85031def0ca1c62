// "Sign in with SSO": OpenID Connect authorization code flow with PKCE (RFC 7636) for a
// public client, against any provider (Keycloak, Auth0, Okta, Entra ID, Dex, ...).
//
// The page reads the issuer's discovery document, sends the browser to the
// authorization endpoint, and on its return trades the code for tokens at the token
// endpoint with the code_verifier only this tab knows (kept in sessionStorage with the
// state and nonce until the provider answers). The Content-Security-Policy lets the
// page fetch the issuer's origin only, so a token endpoint elsewhere is refused here
// with a sentence rather than a CSP error. Tokens are not verified here: the agent API
// verifies every request's bearer token against the provider's JWKS.
//
// Which token is the bearer token: the access_token when it is a JWT (a provider issues
// one for an API audience), else the id_token (its audience is the client id).

import { claimsOf, SignInError } from "./tokens.js";

const PENDING_KEY = "ragkeeper.oidc.pending";
const discoveries = new Map();

function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(bytes) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

async function s256(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

const trimSlash = (url) => String(url ?? "").replace(/\/+$/, "");

async function loadDiscovery(issuer) {
  let response;
  try {
    response = await fetch(`${trimSlash(issuer)}/.well-known/openid-configuration`, {
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new SignInError("Cannot reach the sign-in provider (its discovery document did not load).");
  }
  if (!response.ok) {
    throw new SignInError(`The sign-in provider's discovery document failed (HTTP ${response.status}).`);
  }
  const meta = await response.json().catch(() => null);
  if (typeof meta?.authorization_endpoint !== "string" || typeof meta?.token_endpoint !== "string") {
    throw new SignInError("The sign-in provider's discovery document is not OpenID Connect metadata.");
  }
  if (trimSlash(meta.issuer) !== trimSlash(issuer)) {
    throw new SignInError(`The sign-in provider names another issuer (${meta.issuer}); check WEB_OIDC_ISSUER.`);
  }
  const origin = new URL(issuer).origin;
  if (new URL(meta.token_endpoint).origin !== origin) {
    throw new SignInError(
      `The sign-in provider's token endpoint (${meta.token_endpoint}) is not on the issuer's ` +
      `origin (${origin}), the only one this page may call.`,
    );
  }
  const methods = meta.code_challenge_methods_supported;
  if (Array.isArray(methods) && !methods.includes("S256")) {
    throw new SignInError("The sign-in provider does not support PKCE with S256.");
  }
  return meta;
}

/** The issuer's discovery document, fetched once per page load (a failure is retried). */
function discover(issuer) {
  if (!discoveries.has(issuer)) {
    const loading = loadDiscovery(issuer);
    loading.catch(() => discoveries.delete(issuer));
    discoveries.set(issuer, loading);
  }
  return discoveries.get(issuer);
}

function redirectUri() {
  return location.origin + location.pathname;
}

/** Forget a sign-in that was started but not finished. */
export function clearPending() {
  sessionStorage.removeItem(PENDING_KEY);
}

/** Send the browser to the provider; the page comes back with ?code=&state= or ?error=. */
export async function beginSignIn(oidc) {
  if (!window.isSecureContext || !crypto.subtle) {
    throw new SignInError("Sign-in with SSO needs the page to be served over https.");
  }
  const meta = await discover(oidc.issuer);
  const pending = {
    verifier: randomString(48), // 64 characters, within PKCE's 43-128
    state: randomString(24),
    nonce: randomString(24),
    hash: location.hash, // the open conversation, restored on return
  };
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  const url = new URL(meta.authorization_endpoint);
  const params = {
    response_type: "code",
    client_id: oidc.client_id,
    redirect_uri: redirectUri(),
    scope: oidc.scopes,
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: await s256(pending.verifier),
    code_challenge_method: "S256",
  };
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  location.assign(url.toString());
}

/** The provider's answer in this page's URL, or null if this load is not one. */
export function callbackParams() {
  const params = new URLSearchParams(location.search);
  return params.has("code") || params.has("error") ? params : null;
}

function refused(data, status) {
  const reason = data.error || `HTTP ${status}`;
  const detail = data.error_description ? `: ${data.error_description}` : "";
  return new SignInError(`The sign-in provider refused the sign-in (${reason}${detail}).`);
}

async function tokenRequest(meta, form) {
  let response;
  try {
    response = await fetch(meta.token_endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
      body: new URLSearchParams(form),
      credentials: "omit",
    });
  } catch {
    throw new SignInError(
      "Cannot reach the sign-in provider's token endpoint (does it allow this page's origin?).",
    );
  }
  const data = await response.json().catch(() => ({}));
  if (response.status >= 400 && response.status < 500) throw refused(data, response.status);
  if (!response.ok) throw new SignInError(`The sign-in provider failed (HTTP ${response.status}).`);
  const token = [data.access_token, data.id_token].find((t) => claimsOf(t));
  if (!token) {
    throw new SignInError("The sign-in provider returned no JWT (neither access_token nor id_token).");
  }
  return { token, refresh: data.refresh_token ?? null, idToken: data.id_token ?? null };
}

/** Trade the provider's answer for tokens; clears the URL and the pending sign-in first. */
export async function finishSignIn(oidc, params) {
  let pending = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) ?? "null");
  } catch {
    // A damaged entry is the same as none: the state check below refuses the answer.
  }
  clearPending();
  history.replaceState(null, "", location.pathname + (pending?.hash ?? ""));
  if (params.has("error")) {
    throw refused({ error: params.get("error"), error_description: params.get("error_description") });
  }
  if (!pending?.state || params.get("state") !== pending.state) {
    throw new SignInError(
      "This sign-in answer does not match a sign-in started in this tab (state mismatch), " +
      "so it was refused. Please sign in again.",
    );
  }
  const meta = await discover(oidc.issuer);
  const tokens = await tokenRequest(meta, {
    grant_type: "authorization_code",
    code: params.get("code"),
    redirect_uri: redirectUri(),
    client_id: oidc.client_id,
    code_verifier: pending.verifier,
  });
  if (tokens.idToken && claimsOf(tokens.idToken)?.nonce !== pending.nonce) {
    throw new SignInError(
      "The sign-in provider's ID token does not carry this sign-in's nonce, so it was refused.",
    );
  }
  return tokens;
}

/** New tokens for a refresh token (providers may or may not rotate it). */
export async function refreshTokens(oidc, refreshToken) {
  const meta = await discover(oidc.issuer);
  return tokenRequest(meta, {
    grant_type: "refresh_token",
    refresh_token: refreshToken,
    client_id: oidc.client_id,
  });
}

/** Best effort: revoke the refresh token (RFC 7009) if the provider can, on its origin. */
export async function revokeRefreshToken(oidc, refreshToken) {
  const meta = await discover(oidc.issuer);
  const endpoint = meta.revocation_endpoint;
  if (typeof endpoint !== "string" || new URL(endpoint).origin !== new URL(oidc.issuer).origin) {
    return;
  }
  await fetch(endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      token: refreshToken,
      token_type_hint: "refresh_token",
      client_id: oidc.client_id,
    }),
    credentials: "omit",
  });
}
