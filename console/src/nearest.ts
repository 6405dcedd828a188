// Finding the nearest node, as ferry's own client does: ask the hub which
// spokes to time, time each one's `GET /v1/probe` on a warm connection,
// take the fastest, and tell the hub what was measured (it steers others
// from the same network with it).
import { Api } from "./api";

export interface Node {
  /** The spoke's name, or "hub". */
  name: string;
  /** Its API's base URL (no trailing slash). */
  base: string;
  /** The best probe time, in milliseconds (none for the hub). */
  rttMs?: number;
}

interface ProbeTargets {
  targets: { spoke: string; url: string }[];
  report_to: string;
}

/** Times `url` a few times; the fastest, or null when it did not answer. */
async function timeProbe(url: string, tries = 3): Promise<number | null> {
  let best: number | null = null;
  for (let i = 0; i < tries; i++) {
    const t0 = performance.now();
    try {
      const resp = await fetch(url, { cache: "no-store", mode: "cors" });
      if (!resp.ok) return best;
    } catch {
      return best;
    }
    const ms = performance.now() - t0;
    // The first try also opens the connection: keep the best of all.
    best = best === null ? ms : Math.min(best, ms);
  }
  return best;
}

/** The last answer, kept a minute: timing every spoke before each
 * transfer would cost more than it tells. */
let kept: { node: Node; until: number } | null = null;

/** The nearest spoke that answers, else the hub itself. */
export async function nearestNode(api: Api): Promise<Node> {
  if (kept && Date.now() < kept.until) return kept.node;
  const node = await measure(api);
  kept = { node, until: Date.now() + 60_000 };
  return node;
}

async function measure(api: Api): Promise<Node> {
  const hub: Node = { name: "hub", base: api.base || location.origin };
  let targets: ProbeTargets;
  try {
    targets = await api.call<ProbeTargets>("GET", "/v1/spokes/probe-targets");
  } catch {
    return hub;
  }
  const timed = await Promise.all(
    targets.targets.map(async (t) => ({ t, ms: await timeProbe(t.url) })),
  );
  const answered = timed.filter((x): x is { t: (typeof timed)[number]["t"]; ms: number } => x.ms !== null);
  if (answered.length === 0) return hub;
  answered.sort((a, b) => a.ms - b.ms);
  // What was measured helps the hub steer; a failed report changes nothing here.
  api
    .call("POST", targets.report_to, {
      json: {
        samples: answered.slice(0, 64).map((x) => ({ spoke: x.t.spoke, rtt_ms: Math.max(0.001, x.ms) })),
      },
    })
    .catch(() => undefined);
  const best = answered[0];
  const base = best.t.url.replace(/\/v1\/probe$/, "");
  return { name: best.t.spoke, base, rttMs: best.ms };
}
