// Calls to the agent API, and what their failures mean in words a user understands.
//
// Errors before a chat starts are real HTTP statuses (401, 403, 429 + Retry-After, 5xx);
// once the NDJSON stream has started, a failure arrives as a final {"error", "complete"} line.

export class ApiError extends Error {
  constructor(status, detail, retryAfter) {
    super(detail || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

export class NetworkError extends Error {
  constructor(cause) {
    super("network error");
    this.name = "NetworkError";
    this.cause = cause;
  }
}

function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg ?? String(d)).join("; ");
  return "";
}

async function errorFrom(response) {
  let detail = "";
  try {
    detail = detailText((await response.json()).detail);
  } catch {
    // Not JSON (a proxy's error page, say): the status alone will do.
  }
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  return new ApiError(response.status, detail, Number.isFinite(retryAfter) ? retryAfter : null);
}

/** A sentence for the notice area; `err` is an ApiError, NetworkError or a stream error. */
export function explain(err) {
  if (err instanceof NetworkError) {
    return "Cannot reach the server. Check your connection and try again.";
  }
  if (!(err instanceof ApiError)) return `Something went wrong: ${err.message}`;
  const s = err.status;
  if (s === 401) return "You are not signed in, or your sign-in has expired. Please sign in again.";
  if (s === 403) {
    return "This account is not allowed to do that" + (err.detail ? ` (${err.detail}).` : ".");
  }
  if (s === 404) return "That conversation does not exist, or it is not yours.";
  if (s === 413) {
    return "The message is too large to send" + (err.detail ? `: ${err.detail}.` : ".");
  }
  if (s === 422) return `The server did not accept the message: ${err.detail || "invalid input"}.`;
  if (s === 429) {
    const wait = err.retryAfter ?? 60;
    return `Too many requests: please wait ${wait} second${wait === 1 ? "" : "s"} and try again.`;
  }
  if (s === 502) return "The language model failed to answer. Please try again in a moment.";
  if (s === 503 || s === 504) {
    return "The service is temporarily unavailable. Please try again shortly.";
  }
  if (s >= 500) {
    return `The server ran into an error (HTTP ${s}). Please try again; ` +
      "if it keeps happening, tell your administrator.";
  }
  return `The request failed (HTTP ${s})` + (err.detail ? `: ${err.detail}` : ".");
}

export class Api {
  /** @param {() => Promise<string|null>} token  the bearer token to send, if any */
  constructor(token) {
    this.token = token;
  }

  async request(path, { method = "GET", body, signal } = {}) {
    const headers = { Accept: "application/json" };
    const token = await this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: "no-store",
        credentials: "omit",
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new NetworkError(err);
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  async json(path, options) {
    return (await this.request(path, options)).json();
  }

  conversations() {
    return this.json("/api/conversations?limit=100");
  }

  messages(sessionId) {
    const id = encodeURIComponent(sessionId);
    return this.json(`/api/conversations/${id}/messages?include_tools=true`);
  }

  /** POST /api/pydantic-agent; yields each NDJSON line as an object while it streams. */
  async *chat(body, signal) {
    const response = await this.request("/api/pydantic-agent", { method: "POST", body, signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, end).trim();
          buffer = buffer.slice(end + 1);
          if (line) yield JSON.parse(line);
        }
      }
      if (buffer.trim()) yield JSON.parse(buffer);
    } finally {
      reader.releaseLock();
    }
  }
}
