// Who the page talks as: a pasted bearer token, a Supabase e-mail + password sign-in,
// or an OIDC provider's ("Sign in with SSO", oidc.js).
//
// Tokens live in sessionStorage (this tab only, survives a reload, gone when the tab
// closes) and are removed on sign-out. Supabase sign-in speaks the GoTrue REST API
// directly (POST /auth/v1/token), so no client library is needed. Either service's
// token is the bearer token the agent verifies; with a refresh token it is refreshed
// shortly before it expires, by the service that issued it.

import {
  beginSignIn,
  callbackParams,
  clearPending,
  finishSignIn,
  refreshTokens,
  revokeRefreshToken,
} from "./oidc.js";
import { claimsOf, expired, REFRESH_MARGIN_SECONDS, SignInError } from "./tokens.js";

export { claimsOf, SignInError };

const TOKEN_KEY = "ragkeeper.token";
const REFRESH_KEY = "ragkeeper.refresh";
const ID_TOKEN_KEY = "ragkeeper.id_token";
const VIA_KEY = "ragkeeper.via"; // "token", "supabase" or "oidc": who can refresh and revoke

export class Session {
  #refreshing = null;

  constructor(config) {
    this.disabled = config.auth === "disabled";
    this.supabase = config.supabase;
    this.oidc = config.oidc ?? null;
  }

  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  get signedIn() {
    return this.disabled || Boolean(this.token);
  }

  /** A name to show for the signed-in user. */
  get user() {
    if (this.disabled) return "local user";
    // Access tokens often leave out the profile; the OIDC ID token has it.
    const claims = claimsOf(this.token) ?? {};
    const profile = claimsOf(sessionStorage.getItem(ID_TOKEN_KEY)) ?? {};
    return claims.email || profile.email || claims.preferred_username ||
      profile.preferred_username || claims.sub || "";
  }

  #store(via, { token, refresh, idToken }) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(VIA_KEY, via);
    if (refresh) sessionStorage.setItem(REFRESH_KEY, refresh);
    if (idToken) sessionStorage.setItem(ID_TOKEN_KEY, idToken);
  }

  #clear() {
    for (const key of [TOKEN_KEY, REFRESH_KEY, ID_TOKEN_KEY, VIA_KEY]) {
      sessionStorage.removeItem(key);
    }
  }

  useToken(raw) {
    const token = raw.trim().replace(/^bearer\s+/i, "");
    const claims = claimsOf(token);
    if (!claims) throw new SignInError("That is not a JWT (three base64url parts separated by dots).");
    if (expired(claims)) throw new SignInError("That token has expired.");
    this.#clear();
    this.#store("token", { token });
  }

  async #gotrue(grant, body) {
    let response;
    try {
      response = await fetch(`${this.supabase.url}/auth/v1/token?grant_type=${grant}`, {
        method: "POST",
        headers: { apikey: this.supabase.anon_key, "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "omit",
      });
    } catch {
      throw new SignInError("Cannot reach the sign-in service.");
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok || typeof data.access_token !== "string") {
      if (response.status === 400 || response.status === 401) {
        throw new SignInError(data.error_description || data.msg || "Wrong e-mail or password.");
      }
      throw new SignInError(`The sign-in service failed (HTTP ${response.status}).`);
    }
    this.#store("supabase", { token: data.access_token, refresh: data.refresh_token });
  }

  passwordSignIn(email, password) {
    return this.#gotrue("password", { email, password });
  }

  /** Go to the OIDC provider's sign-in page (the browser leaves this page). */
  ssoSignIn() {
    return beginSignIn(this.oidc);
  }

  /** If this page load is the OIDC provider's answer, finish signing in (or throw why not). */
  async completeSsoSignIn() {
    const params = this.oidc ? callbackParams() : null;
    if (!params) return;
    this.#clear(); // whatever happens next, no earlier session survives (finishSignIn
    // consumes the pending sign-in's verifier, state and nonce)
    this.#store("oidc", await finishSignIn(this.oidc, params));
  }

  async #refresh(via, refresh) {
    if (via === "supabase" && this.supabase) {
      await this.#gotrue("refresh_token", { refresh_token: refresh });
    } else if (via === "oidc" && this.oidc) {
      this.#store("oidc", await refreshTokens(this.oidc, refresh));
    }
  }

  /** The token to send now, refreshed first if it is about to expire and can be. */
  async validToken() {
    if (this.disabled) return null;
    const token = this.token;
    const refresh = sessionStorage.getItem(REFRESH_KEY);
    if (token && refresh && expired(claimsOf(token), REFRESH_MARGIN_SECONDS)) {
      // Calls made at the same moment share one refresh (a rotated refresh token works once).
      this.#refreshing ??= this.#refresh(sessionStorage.getItem(VIA_KEY), refresh)
        .catch(() => {
          // Send the old token; the server's 401 will ask the user to sign in again.
        })
        .finally(() => {
          this.#refreshing = null;
        });
      await this.#refreshing;
    }
    return this.token;
  }

  /** Forget the session in this tab; the provider's own SSO session is left alone. */
  async signOut() {
    const token = this.token;
    const refresh = sessionStorage.getItem(REFRESH_KEY);
    const via = sessionStorage.getItem(VIA_KEY);
    this.#clear();
    clearPending();
    if (refresh && via === "oidc" && this.oidc) {
      // Best effort: the refresh token must not outlive the sign-out.
      await revokeRefreshToken(this.oidc, refresh).catch(() => undefined);
    }
    if (token && via === "supabase" && this.supabase) {
      // Best effort: revoke the refresh token on the server too.
      await fetch(`${this.supabase.url}/auth/v1/logout`, {
        method: "POST",
        headers: { apikey: this.supabase.anon_key, Authorization: `Bearer ${token}` },
        credentials: "omit",
      }).catch(() => undefined);
    }
  }
}
