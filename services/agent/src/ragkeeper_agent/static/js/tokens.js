// What every sign-in path shares: its error type and reading a JWT's claims and expiry.
//
// The page never verifies a token (the agent API does, on every request); it only
// reads the claims to show who is signed in and to refresh a token shortly before
// it expires, whichever service issued it (Supabase, an OIDC provider).

export const REFRESH_MARGIN_SECONDS = 30;

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

/** Whether the token's `exp` is past, or within `marginSeconds` of now. */
export function expired(claims, marginSeconds = 0) {
  return typeof claims?.exp === "number" && claims.exp - marginSeconds <= Date.now() / 1000;
}
