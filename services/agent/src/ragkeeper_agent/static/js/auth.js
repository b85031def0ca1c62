// Who the page talks as: a pasted bearer token, or a Supabase e-mail + password sign-in.
//
// Tokens live in sessionStorage (this tab only, survives a reload, gone when the tab
// closes) and are removed on sign-out. Supabase sign-in speaks the GoTrue REST API
// directly (POST /auth/v1/token), so no client library is needed; the access token
// it returns is the bearer token the agent verifies, and it is refreshed shortly
// before it expires.

const TOKEN_KEY = "ragkeeper.token";
const REFRESH_KEY = "ragkeeper.refresh";
const REFRESH_MARGIN_SECONDS = 30;

export class SignInError extends Error {
  constructor(message) {
    super(message);
    this.name = "SignInError";
  }
}

/** The claims of a JWT (not verified: the server does that), or null if it is not one. */
export function claimsOf(token) {
  const parts = (token ?? "").split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = new TextDecoder().decode(
      Uint8Array.from(atob(b64.padEnd(b64.length + ((4 - (b64.length % 4)) % 4), "=")), (c) =>
        c.charCodeAt(0)),
    );
    const claims = JSON.parse(json);
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

function expired(claims, marginSeconds = 0) {
  return typeof claims?.exp === "number" && claims.exp - marginSeconds <= Date.now() / 1000;
}

export class Session {
  constructor(config) {
    this.disabled = config.auth === "disabled";
    this.supabase = config.supabase;
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
    const claims = claimsOf(this.token);
    return claims?.email || claims?.preferred_username || claims?.sub || "";
  }

  useToken(raw) {
    const token = raw.trim().replace(/^bearer\s+/i, "");
    const claims = claimsOf(token);
    if (!claims) throw new SignInError("That is not a JWT (three base64url parts separated by dots).");
    if (expired(claims)) throw new SignInError("That token has expired.");
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.removeItem(REFRESH_KEY);
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
    sessionStorage.setItem(TOKEN_KEY, data.access_token);
    if (data.refresh_token) sessionStorage.setItem(REFRESH_KEY, data.refresh_token);
  }

  passwordSignIn(email, password) {
    return this.#gotrue("password", { email, password });
  }

  /** The token to send now, refreshed first if it is about to expire and can be. */
  async validToken() {
    if (this.disabled) return null;
    const token = this.token;
    const refresh = sessionStorage.getItem(REFRESH_KEY);
    if (token && refresh && this.supabase && expired(claimsOf(token), REFRESH_MARGIN_SECONDS)) {
      try {
        await this.#gotrue("refresh_token", { refresh_token: refresh });
      } catch {
        // Send the old token; the server's 401 will ask the user to sign in again.
      }
    }
    return this.token;
  }

  async signOut() {
    const token = this.token;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(REFRESH_KEY);
    if (token && this.supabase) {
      // Best effort: revoke the refresh token on the server too.
      await fetch(`${this.supabase.url}/auth/v1/logout`, {
        method: "POST",
        headers: { apikey: this.supabase.anon_key, Authorization: `Bearer ${token}` },
        credentials: "omit",
      }).catch(() => undefined);
    }
  }
}
