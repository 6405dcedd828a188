// The console's service worker, for one thing only: saving a download to
// disk as it arrives, instead of holding the whole file in the page's
// memory first. The page fetches the file itself (under its own policy,
// with the API key), hands the body over as a stream, and points a hidden
// frame at /console/download/<id>/<name>; this worker answers that
// request with the stream, as an attachment, and the browser writes it
// to disk as it comes. It fetches nothing and holds no credential.

interface FetchEventLike extends Event {
  request: Request;
  respondWith(r: Response | Promise<Response>): void;
}
interface ExtendableEventLike extends Event {
  waitUntil(p: Promise<unknown>): void;
}
interface MessageEventLike extends Event {
  data: unknown;
  ports: readonly MessagePort[];
}
interface WorkerScope {
  skipWaiting(): Promise<void>;
  clients: { claim(): Promise<void> };
  location: Location;
  addEventListener(type: "install" | "activate", f: (e: ExtendableEventLike) => void): void;
  addEventListener(type: "message", f: (e: MessageEventLike) => void): void;
  addEventListener(type: "fetch", f: (e: FetchEventLike) => void): void;
}

const scope = self as unknown as WorkerScope;

interface Pending {
  stream: ReadableStream<Uint8Array>;
  name: string;
  length: string | null;
}

/** Streams handed over and not yet asked for, by id. */
const pending = new Map<string, Pending>();

/** How long a stream waits for its frame's request. */
const UNCLAIMED_MS = 60_000;

scope.addEventListener("install", (ev) => ev.waitUntil(scope.skipWaiting()));
scope.addEventListener("activate", (ev) => ev.waitUntil(scope.clients.claim()));

scope.addEventListener("message", (ev) => {
  const d = ev.data as Partial<Pending> & { id?: unknown };
  // Pings keep the worker alive while a download runs; nothing to do.
  if (typeof d?.id !== "string" || !(d.stream instanceof ReadableStream)) return;
  const id = d.id;
  pending.set(id, {
    stream: d.stream,
    name: typeof d.name === "string" ? d.name : "download",
    length: typeof d.length === "string" && /^\d+$/.test(d.length) ? d.length : null,
  });
  setTimeout(() => {
    const left = pending.get(id);
    if (left) {
      pending.delete(id);
      void left.stream.cancel("never asked for");
    }
  }, UNCLAIMED_MS);
  ev.ports[0]?.postMessage("ready");
});

scope.addEventListener("fetch", (ev) => {
  const url = new URL(ev.request.url);
  const m = /^\/console\/download\/([0-9a-f]{32})\//.exec(url.pathname);
  if (url.origin !== scope.location.origin || !m) return;
  const p = pending.get(m[1]);
  pending.delete(m[1]);
  if (!p) {
    ev.respondWith(
      new Response("This download is no longer available; start it again from the console.", {
        status: 404,
        headers: { "Content-Type": "text/plain; charset=utf-8" },
      }),
    );
    return;
  }
  const headers = new Headers({
    // Saved, never shown: the file's own type does not matter here.
    "Content-Type": "application/octet-stream",
    "Content-Disposition": `attachment; filename*=UTF-8''${encodeURIComponent(p.name)}`,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
  });
  if (p.length !== null) headers.set("Content-Length", p.length);
  ev.respondWith(new Response(p.stream, { headers }));
});
