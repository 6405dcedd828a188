// Calls to ferry's API with the signed-in credential, and its errors
// (RFC 9457 problems) as readable text.

/** A failed call: the problem's fields, or what went wrong before one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** How a problem reads to a person: its title, its detail, its code. */
function problemText(status: number, body: unknown): ApiError {
  if (body && typeof body === "object") {
    const p = body as Record<string, unknown>;
    const code = typeof p.code === "string" ? p.code : `http_${status}`;
    const title = typeof p.title === "string" ? p.title : `HTTP ${status}`;
    const detail = typeof p.detail === "string" ? p.detail : "";
    return new ApiError(status, code, detail ? `${title}: ${detail} (${code})` : `${title} (${code})`);
  }
  return new ApiError(status, `http_${status}`, `The server answered ${status}.`);
}

export interface CallOptions {
  json?: unknown;
  headers?: Record<string, string>;
}

export class Api {
  constructor(
    readonly base: string,
    readonly token: string,
  ) {}

  /** A request; the answer, which was a success. */
  async raw(method: string, path: string, opts: CallOptions = {}): Promise<Response> {
    const headers: Record<string, string> = {
      Authorization: `Bearer ${this.token}`,
      ...opts.headers,
    };
    let body: BodyInit | undefined;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    let resp: Response;
    try {
      resp = await fetch(this.base + path, { method, headers, body, cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, "network", `Could not reach ${this.base || "the hub"}: ${String(e)}`);
    }
    if (!resp.ok) {
      let parsed: unknown = null;
      try {
        parsed = await resp.json();
      } catch {
        // Not JSON: said by status alone.
      }
      throw problemText(resp.status, parsed);
    }
    return resp;
  }

  /** A request whose answer is JSON (or nothing, for 204). */
  async call<T = any>(method: string, path: string, opts: CallOptions = {}): Promise<T> {
    const resp = await this.raw(method, path, opts);
    if (resp.status === 204) return undefined as T;
    return (await resp.json()) as T;
  }
}

/** Each segment of an object path percent-encoded, the slashes kept. */
export function pathUrl(path: string): string {
  return path
    .split("/")
    .map((s) => encodeURIComponent(s))
    .join("/");
}
