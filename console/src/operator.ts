// The operator's view: the spokes (their tunnels and steering state,
// refreshed every two seconds) and the hubs they reach, join and fleet
// tokens, the steering decision for a client network, accounts, and this
// hub's store.
import { ApiError } from "./api";
import { h, replace, showOnce, size, when } from "./dom";
import type { Section, Session } from "./main";
import { alertRegion, errorText, statusRegion } from "./main";

interface Spoke {
  name: string;
  enrolled_at: number | null;
  revoked_at: number | null;
  created_at: number;
  tunnel: null | {
    transport: string;
    connected_secs: number;
    rtt_ms: number;
    active_transfers: number;
    bytes_per_sec: number;
    draining: boolean;
    steering: null | { public_url: string; public_addrs: string[]; capacity_transfers: number };
    software: string;
    certificate_expires_at: number | null;
  };
  steering: string | null;
}

/** One word for a spoke's state, from its tunnel and steering. */
export function spokeStatus(s: Spoke): "revoked" | "not enrolled" | "down" | "draining" | "degraded" | "healthy" {
  if (s.revoked_at) return "revoked";
  if (!s.enrolled_at) return "not enrolled";
  if (!s.tunnel) return "down";
  if (s.tunnel.draining) return "draining";
  if (s.steering !== "eligible") return "degraded";
  return "healthy";
}

interface Hub {
  id: string;
  this: boolean;
  tunnel_addr: string | null;
  tunnel_tcp_addr: string | null;
  last_seen: number;
  spokes: { name: string; rtt_ms: number | null }[];
  store?: { backend: string; primary_up: boolean; replica_up: boolean | null };
}

/** This hub's store, in words. */
function storeHealth(st: Hub["store"]): string {
  if (!st) return "—";
  if (st.backend === "sqlite") return "SQLite";
  const replica = st.replica_up === null ? "no replica" : st.replica_up ? "replica up" : "replica down";
  return `PostgreSQL: primary ${st.primary_up ? "up" : "down"}, ${replica}`;
}

/** A spoke's round trips to each hub that hears it, in words. */
function roundTrips(name: string, hubs: Hub[]): string {
  const heard = hubs.flatMap((hub) =>
    hub.spokes
      .filter((sp) => sp.name === name)
      .map((sp) => {
        const rtt = sp.rtt_ms === null ? "TCP" : `${sp.rtt_ms} ms`;
        return hubs.length === 1 ? rtt : `${hub.this ? "this hub" : hub.id}: ${rtt}`;
      }),
  );
  return heard.join(", ") || "—";
}

const POLL_MS = 2000;

async function spokes(s: Session, main: HTMLElement): Promise<void> {
  const error = alertRegion();
  const updated = statusRegion();
  const tbody = h("tbody", {});
  const hubRows = h("tbody", {});
  const map = h("div", { class: "map", "aria-label": "Spokes around this hub" });
  const draw = async () => {
    let got: { spokes: Spoke[] };
    let hubs: Hub[];
    try {
      [got, hubs] = await Promise.all([
        s.api.call<{ spokes: Spoke[] }>("GET", "/v1/spokes"),
        s.api.call<{ hubs: Hub[] }>("GET", "/v1/hubs").then((r) => r.hubs),
      ]);
      error.textContent = "";
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) {
        replace(tbody, h("tr", {}, h("td", { colspan: 10 }, "This hub takes no spokes (no [tunnel] section).")));
        return;
      }
      error.textContent = errorText(e);
      return;
    }
    replace(
      tbody,
      got.spokes.map((sp) => {
        const st = spokeStatus(sp);
        const t = sp.tunnel;
        return h(
          "tr",
          { "data-spoke": sp.name, "data-status": st },
          h("th", { scope: "row" }, sp.name),
          h("td", {}, h("span", { class: `badge ${st.replace(" ", "-")}` }, st)),
          h("td", {}, sp.steering ?? "—"),
          h("td", {}, t ? t.transport.toUpperCase() : "—"),
          h("td", {}, roundTrips(sp.name, hubs)),
          h("td", {}, t ? String(t.active_transfers) : "—"),
          h("td", {}, t ? `${size(t.bytes_per_sec)}/s` : "—"),
          h("td", {}, t?.steering?.public_url ?? "—"),
          h("td", {}, t ? t.software : "—"),
          h("td", {}, t ? when(t.certificate_expires_at) : "—"),
        );
      }),
    );
    // The hub in the middle, its spokes around it, each line as long as
    // its round trip (the layout is drawn with the CSS object model).
    replace(
      map,
      h("div", { class: "node hub" }, "hub"),
      got.spokes
        .filter((sp) => !sp.revoked_at)
        .map((sp, i, all) => {
          const st = spokeStatus(sp);
          const angle = (2 * Math.PI * i) / Math.max(1, all.length);
          const reach = 30 + Math.min(15, sp.tunnel?.rtt_ms ?? 15);
          const el = h(
            "div",
            { class: `node ${st.replace(" ", "-")}`, title: `${sp.name}: ${st}` },
            sp.name,
          );
          el.style.left = `${50 + reach * Math.cos(angle)}%`;
          el.style.top = `${50 + reach * Math.sin(angle)}%`;
          return el;
        }),
    );
    replace(
      hubRows,
      hubs.map((hub) =>
        h(
          "tr",
          { "data-hub": hub.id, "data-this": String(hub.this), "data-spokes": hub.spokes.length },
          h("th", { scope: "row" }, hub.this ? `${hub.id} (this hub)` : hub.id),
          h("td", {}, hub.tunnel_addr ?? "—"),
          h("td", {}, hub.tunnel_tcp_addr ?? "—"),
          h("td", {}, when(hub.last_seen)),
          h("td", {}, storeHealth(hub.store)),
          h("td", {}, hub.spokes.map((sp) => sp.name).join(", ") || "none"),
        ),
      ),
    );
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  };
  replace(
    main,
    h("h1", {}, "Spokes"),
    error,
    h(
      "table",
      { id: "spokes" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Spoke", "Status", "Steering", "Transport", "RTT to the hubs", "Transfers", "Throughput", "Public URL", "Version", "Certificate expires"].map((t) =>
            h("th", { scope: "col" }, t),
          ),
        ),
      ),
      tbody,
    ),
    updated,
    map,
    h("h2", {}, "Hubs"),
    h("p", { class: "help" }, "The hubs sharing this hub's metadata store, and the spokes whose tunnel to each is up."),
    h(
      "table",
      { id: "hubs" },
      h("thead", {}, h("tr", {}, ["Hub", "QUIC tunnel", "TCP tunnel", "Last seen", "Store (as this hub sees it)", "Spokes"].map((t) => h("th", { scope: "col" }, t)))),
      hubRows,
    ),
    joinForm(s),
    fleets(s),
  );
  await draw();
  const timer = window.setInterval(() => void draw(), POLL_MS);
  s.stops.push(() => window.clearInterval(timer));
}

/** Adds a spoke, or makes a new join token for one. */
function joinForm(s: Session): HTMLElement {
  const error = alertRegion();
  const name = h("input", { id: "spoke-name", required: true, autocomplete: "off", pattern: "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?" });
  const shown = h("div", { hidden: true });
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "Join token"),
    h("p", { class: "help" }, "A new spoke's name adds it; an existing spoke's name makes it a new token (the old one stops working)."),
    h("div", { class: "field" }, h("label", { for: "spoke-name" }, "Spoke name"), name),
    h("button", { type: "submit" }, "Make a join token"),
    error,
    shown,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      const made = await s.api.call<{ join_token: string; expires_at: number }>("POST", "/v1/spokes", {
        json: { name: name.value.trim() },
      });
      showOnce(shown, "join-token", `Join token for ${name.value.trim()}, valid until ${when(made.expires_at)}; shown this once:`, made.join_token);
    } catch (e) {
      error.textContent = errorText(e);
    }
  });
  return form;
}

interface Fleet {
  id: string;
  prefix: string;
  expires_at: number;
  state: "active" | "expired" | "revoked";
  allowed_public: { addrs: string[]; hosts: string[] };
}

/** A comma- or space-separated list as an array, or nothing when empty. */
function list(text: string): string[] | undefined {
  const items = text.split(/[\s,]+/).filter((x) => x !== "");
  return items.length ? items : undefined;
}

/** Fleet tokens: made (shown once), listed and revoked. */
function fleets(s: Session): HTMLElement {
  const error = alertRegion();
  const done = statusRegion();
  const tbody = h("tbody", {});
  const prefix = h("input", { id: "fleet-prefix", required: true, autocomplete: "off", maxlength: 40, pattern: "[a-z0-9][a-z0-9-]{0,39}" });
  const days = h("input", { id: "fleet-days", type: "number", min: 1, max: 366, placeholder: "90" });
  const addrs = h("input", { id: "fleet-addrs", autocomplete: "off", placeholder: "198.51.100.0/22" });
  const hosts = h("input", { id: "fleet-hosts", autocomplete: "off", placeholder: "*.iad.edge.example.com" });
  const shown = h("div", { hidden: true });
  const draw = async () => {
    let got: { fleets: Fleet[] };
    try {
      got = await s.api.call<{ fleets: Fleet[] }>("GET", "/v1/fleets");
    } catch (e) {
      error.textContent = errorText(e);
      return;
    }
    replace(
      tbody,
      got.fleets.length === 0
        ? h("tr", {}, h("td", { colspan: 5 }, "No fleet tokens."))
        : got.fleets.map((f) => {
            const allowed = [...f.allowed_public.addrs, ...f.allowed_public.hosts].join(", ") || "nothing";
            const revoke =
              f.state === "active"
                ? h("button", { type: "button", class: "danger", "aria-label": `Revoke fleet token ${f.prefix}-… (${f.id})` }, "Revoke")
                : null;
            revoke?.addEventListener("click", async () => {
              if (!window.confirm(`Revoke the fleet token for ${f.prefix}-…? The spokes it enrolled stay.`)) return;
              error.textContent = "";
              try {
                await s.api.call("DELETE", `/v1/fleets/${encodeURIComponent(f.id)}`);
                done.textContent = `Revoked the fleet token for ${f.prefix}-….`;
                await draw();
              } catch (e) {
                error.textContent = errorText(e);
              }
            });
            return h(
              "tr",
              { "data-fleet": f.id, "data-state": f.state },
              h("th", { scope: "row" }, `${f.prefix}-…`),
              h("td", {}, f.state),
              h("td", {}, when(f.expires_at)),
              h("td", {}, allowed),
              h("td", {}, revoke),
            );
          }),
    );
  };
  const form = h(
    "form",
    {},
    h("div", { class: "field" }, h("label", { for: "fleet-prefix" }, "Name prefix (its spokes are named prefix-…)"), prefix),
    h("div", { class: "field" }, h("label", { for: "fleet-days" }, "Days valid (default 90)"), days),
    h("div", { class: "field" }, h("label", { for: "fleet-addrs" }, "Public networks its spokes may announce"), addrs),
    h("div", { class: "field" }, h("label", { for: "fleet-hosts" }, "Host names their probe URLs may use"), hosts),
    h("button", { type: "submit" }, "Make a fleet token"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const body: Record<string, unknown> = { prefix: prefix.value.trim() };
    if (days.value !== "") body.token_ttl_secs = Math.round(Number(days.value) * 86400);
    const a = list(addrs.value);
    const n = list(hosts.value);
    if (a) body.public_addrs = a;
    if (n) body.public_hosts = n;
    try {
      const made = await s.api.call<{ fleet_token: string; expires_at: number; prefix: string }>("POST", "/v1/fleets", { json: body });
      showOnce(
        shown,
        "fleet-token",
        `Fleet token for ${made.prefix}-…, valid until ${when(made.expires_at)}; shown this once (give it to each spoke as FERRY_JOIN_TOKEN):`,
        made.fleet_token,
      );
      await draw();
    } catch (e) {
      error.textContent = errorText(e);
    }
  });
  void draw();
  return h(
    "section",
    { class: "card", "aria-labelledby": "fleets-title" },
    h("h2", { id: "fleets-title" }, "Fleet tokens"),
    h("p", { class: "help" }, "One token enrols any number of new spokes named prefix-… (an auto-scaling group) until it expires or is revoked."),
    h(
      "table",
      { id: "fleets" },
      h("thead", {}, h("tr", {}, ["Spokes named", "State", "Expires", "May announce", "Action"].map((t) => h("th", { scope: "col" }, t)))),
      tbody,
    ),
    form,
    error,
    done,
    shown,
  );
}

async function steering(s: Session, main: HTMLElement): Promise<void> {
  const error = alertRegion();
  const out = h("div", {});
  const client = h("input", { id: "steer-client", required: true, autocomplete: "off", inputmode: "text" });
  const form = h(
    "form",
    { class: "card" },
    h("div", { class: "field" }, h("label", { for: "steer-client" }, "Client address (IPv4 or IPv6)"), client),
    h("button", { type: "submit" }, "Show the decision"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      const got = await s.api.call<any>("GET", `/v1/steering?client=${encodeURIComponent(client.value.trim())}`);
      const c = got.client ?? {};
      const net = (got.prefixes ?? [])[0];
      replace(
        out,
        h(
          "dl",
          { class: "decision" },
          h("dt", {}, "Answer"),
          h("dd", { id: "steer-answer" }, c.spoke ?? "the hub"),
          h("dt", {}, "Basis"),
          h("dd", {}, c.basis ?? "—"),
          h("dt", {}, "Network"),
          h("dd", {}, net ? net.prefix : `/${c.scope ?? "?"} (no measurement yet)`),
          h("dt", {}, "Eligible spokes"),
          h("dd", {}, (got.eligible ?? []).join(", ") || "none"),
        ),
        net
          ? h(
              "table",
              {},
              h("thead", {}, h("tr", {}, ["Spoke", "RTT", "Samples", "Age", "Eligible"].map((t) => h("th", { scope: "col" }, t)))),
              h(
                "tbody",
                {},
                net.spokes.map((x: any) =>
                  h(
                    "tr",
                    {},
                    h("td", {}, x.spoke),
                    h("td", {}, `${x.rtt_ms} ms`),
                    h("td", {}, `${x.samples.spoke} from the spoke, ${x.samples.probe} from probes`),
                    h("td", {}, `${x.age_secs} s`),
                    h("td", {}, x.eligible ? "yes" : "no"),
                  ),
                ),
              ),
            )
          : "",
      );
    } catch (e) {
      error.textContent = errorText(e);
    }
  });
  replace(main, h("h1", {}, "Steering"), form, error, out);
}

async function accounts(s: Session, main: HTMLElement): Promise<void> {
  const got = await s.api.call<{ accounts: { id: string; name: string; created_at: number }[]; next_cursor: string | null }>(
    "GET",
    "/v1/accounts?limit=1000",
  );
  const ready = h("p", { class: "status", role: "status" }, "Asking the store…");
  replace(
    main,
    h("h1", {}, "Accounts"),
    ready,
    h(
      "table",
      { id: "accounts" },
      h("thead", {}, h("tr", {}, ["Name", "ID", "Created"].map((t) => h("th", { scope: "col" }, t)))),
      h(
        "tbody",
        {},
        got.accounts.map((a) => h("tr", {}, h("td", {}, a.name), h("td", { class: "mono" }, a.id), h("td", {}, when(a.created_at)))),
      ),
    ),
    got.next_cursor ? h("p", {}, "Only the first 1,000 accounts are shown.") : "",
  );
  const resp = await fetch("/readyz", { cache: "no-store" });
  ready.textContent = resp.ok ? "This hub's metadata store answers." : "This hub's metadata store does not answer (503).";
}

export const operatorViews: Section[] = [
  { path: "spokes", label: "Spokes", view: spokes },
  { path: "steering", label: "Steering", view: steering },
  { path: "accounts", label: "Accounts", view: accounts },
];
