// Saving a download to disk as it arrives, through the console's service
// worker (`download-worker.ts`), where the browser can: the page keeps no
// more of the file than is in flight. Where it cannot (no service
// workers, streams that cannot be handed to one), the caller reads the
// file whole instead.
import { h } from "./dom";

const WORKER = "/console/download-worker.js";
const SCOPE = "/console/download/";

let worker: Promise<ServiceWorker | null> | null = null;

/** The worker, registered (once) and active; null where there is none. */
function downloadWorker(): Promise<ServiceWorker | null> {
  worker ??= register();
  return worker;
}

async function register(): Promise<ServiceWorker | null> {
  if (!("serviceWorker" in navigator) || !window.isSecureContext) return null;
  try {
    const reg = await navigator.serviceWorker.register(WORKER, { scope: SCOPE });
    const sw = reg.installing ?? reg.waiting ?? reg.active;
    if (sw && sw.state !== "activated") {
      await new Promise<void>((resolve) => {
        const check = () => {
          if (sw.state === "activated" || sw.state === "redundant") resolve();
        };
        sw.addEventListener("statechange", check);
        check();
      });
    }
    return reg.active;
  } catch {
    return null;
  }
}

/** How much is gathered before it is handed to the worker. */
const PIECE = 1 << 20;

function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Saves `resp`'s body to disk as `name` while it arrives, calling
 * `progress` with the bytes passed on so far; resolves with the total once
 * the last byte is handed to the browser. Resolves `null`, having read
 * nothing, where the browser cannot stream a download this way.
 */
export async function saveStreaming(
  resp: Response,
  name: string,
  progress: (bytes: number) => void,
): Promise<number | null> {
  const sw = await downloadWorker();
  if (!sw || !resp.body) return null;
  const reader = resp.body.getReader();
  let bytes = 0;
  let settle!: (n: number) => void;
  let fail!: (e: unknown) => void;
  const finished = new Promise<number>((resolve, reject) => {
    settle = resolve;
    fail = reject;
  });
  // Handed on in pieces of about a mebibyte: each piece crosses to the
  // worker as a message, and the network's own pieces are small.
  const stream = new ReadableStream<Uint8Array>({
    async pull(c) {
      try {
        const parts: Uint8Array[] = [];
        let held = 0;
        let ended = false;
        while (held < PIECE) {
          const { done, value } = await reader.read();
          if (done) {
            ended = true;
            break;
          }
          parts.push(value);
          held += value.byteLength;
        }
        if (held > 0) {
          let piece = parts[0];
          if (parts.length > 1) {
            piece = new Uint8Array(held);
            let at = 0;
            for (const p of parts) {
              piece.set(p, at);
              at += p.byteLength;
            }
          }
          bytes += held;
          progress(bytes);
          c.enqueue(piece);
        }
        if (ended) {
          c.close();
          settle(bytes);
        }
      } catch (e) {
        c.error(e);
        fail(e);
      }
    },
    cancel(reason) {
      void reader.cancel(reason);
      fail(new Error("the download was cancelled"));
    },
  });
  const id = randomId();
  const channel = new MessageChannel();
  const taken = new Promise<void>((resolve) => {
    channel.port1.onmessage = () => resolve();
  });
  try {
    sw.postMessage({ id, name, length: resp.headers.get("Content-Length"), stream }, [
      stream as unknown as Transferable,
      channel.port2,
    ]);
  } catch {
    // Streams cannot be handed over here; nothing was read yet.
    reader.releaseLock();
    return null;
  }
  await taken;
  const frame = h("iframe", { hidden: true, title: `Saving ${name}`, src: `${SCOPE}${id}/${encodeURIComponent(name)}` });
  document.body.appendChild(frame);
  // An idle worker may be stopped; messages keep it awake meanwhile.
  const ping = window.setInterval(() => sw.postMessage({ ping: true }), 10_000);
  try {
    return await finished;
  } finally {
    window.clearInterval(ping);
    window.setTimeout(() => frame.remove(), 5_000);
  }
}
