// The account's view: connections, a file browser with uploads through
// the nearest spoke, API keys, webhooks and usage.
import * as tus from "tus-js-client";
import { Api, ApiError, pathUrl } from "./api";
import { h, replace, showOnce, size, when } from "./dom";
import type { Section, Session } from "./main";
import { alertRegion, errorText, statusRegion } from "./main";
import { nearestNode } from "./nearest";
import { saveStreaming } from "./save";

interface Connection {
  id: string;
  name: string;
  provider: string;
  created_at: number;
}

interface Entry {
  path: string;
  name: string;
  type: "file" | "folder";
  size?: number;
  modified_at?: number;
}

interface Field {
  name: string;
  label: string;
  secret?: boolean;
  required?: boolean;
  kind?: "checkbox";
}

/** What each provider's form asks (docs/providers.md). Secrets are
 * password fields, sent once and never shown again. */
const PROVIDERS: Record<string, Field[]> = {
  fs: [{ name: "root", label: "Folder (on the hub and its spokes)", required: true }],
  memory: [],
  s3: [
    { name: "bucket", label: "Bucket", required: true },
    { name: "region", label: "Region" },
    { name: "endpoint", label: "Endpoint (S3-compatible servers)" },
    { name: "access_key_id", label: "Access key ID" },
    { name: "secret_access_key", label: "Secret access key", secret: true },
    { name: "root", label: "Prefix in the bucket" },
  ],
  azblob: [
    { name: "container", label: "Container", required: true },
    { name: "account_name", label: "Storage account", required: true },
    { name: "account_key", label: "Account key", secret: true },
    { name: "sas_token", label: "SAS token", secret: true },
    { name: "endpoint", label: "Endpoint" },
    { name: "root", label: "Prefix in the container" },
  ],
  gcs: [
    { name: "bucket", label: "Bucket", required: true },
    { name: "credential", label: "Service account key (JSON, base64)", secret: true },
    { name: "endpoint", label: "Endpoint" },
    { name: "root", label: "Prefix in the bucket" },
  ],
  webdav: [
    { name: "endpoint", label: "Server URL", required: true },
    { name: "username", label: "User name" },
    { name: "password", label: "Password", secret: true },
    { name: "root", label: "Folder on the server" },
  ],
};

async function connections(s: Session, main: HTMLElement): Promise<void> {
  const error = alertRegion();
  const status = statusRegion();
  const list = await s.api.call<{ connections: Connection[] }>("GET", "/v1/connections");
  const rows = list.connections.map((c) =>
    h(
      "tr",
      {},
      h("td", {}, h("a", { href: `#/files/${encodeURIComponent(c.name)}/` }, c.name)),
      h("td", {}, c.provider),
      h("td", { class: "mono" }, c.id),
      h("td", {}, when(c.created_at)),
      h(
        "td",
        { class: "actions" },
        h(
          "button",
          {
            type: "button",
            onclick: async () => {
              status.textContent = `Testing ${c.name}…`;
              error.textContent = "";
              try {
                await s.api.call("GET", `/v1/connections/${encodeURIComponent(c.name)}/list/?limit=1`);
                status.textContent = `${c.name}: the provider answered.`;
              } catch (e) {
                status.textContent = "";
                error.textContent = `${c.name}: ${errorText(e)}`;
              }
            },
          },
          "Test",
        ),
        h(
          "button",
          {
            type: "button",
            class: "danger",
            onclick: async () => {
              if (!confirm(`Delete the connection ${c.name}? Its files at the provider stay.`)) return;
              try {
                await s.api.call("DELETE", `/v1/connections/${encodeURIComponent(c.name)}`);
                // Drawn again: through the hash when it changes, else at once.
                if (location.hash !== "#/connections") location.hash = "#/connections";
                else window.dispatchEvent(new HashChangeEvent("hashchange"));
              } catch (e) {
                error.textContent = errorText(e);
              }
            },
          },
          "Delete",
        ),
      ),
    ),
  );

  const provider = h(
    "select",
    { id: "conn-provider", name: "provider" },
    Object.keys(PROVIDERS).map((p) => h("option", { value: p }, p)),
  );
  const fields = h("div", { class: "fields" });
  const showFields = () => {
    replace(
      fields,
      PROVIDERS[provider.value].map((f) => {
        const id = `conn-${f.name}`;
        return h(
          "div",
          { class: "field" },
          h("label", { for: id }, f.label),
          h("input", {
            id,
            name: f.name,
            type: f.secret ? "password" : "text",
            autocomplete: "off",
            required: f.required ?? false,
          }),
        );
      }),
    );
  };
  provider.addEventListener("change", showFields);
  showFields();
  const name = h("input", { id: "conn-name", name: "name", required: true, autocomplete: "off" });
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "New connection"),
    h("div", { class: "field" }, h("label", { for: "conn-name" }, "Name"), name),
    h("div", { class: "field" }, h("label", { for: "conn-provider" }, "Provider"), provider),
    fields,
    h("button", { type: "submit" }, "Create connection"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const config: Record<string, string> = {};
    for (const input of Array.from(fields.querySelectorAll("input"))) {
      if (input.value !== "") config[input.name] = input.value;
    }
    try {
      await s.api.call("POST", "/v1/connections", {
        json: { name: name.value.trim(), provider: provider.value, config },
      });
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (e) {
      error.textContent = errorText(e);
    }
  });

  replace(
    main,
    h("h1", {}, "Connections"),
    error,
    status,
    rows.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Name", "Provider", "ID", "Created", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, rows),
        )
      : h("p", {}, "No connection yet: create one below."),
    form,
  );
}

/** What the files view says when it is drawn again soon after (an
 * upload's end), and until when. */
let flash = { text: "", where: "", until: 0 };

/** The parent folder of `path` ("" at the top). */
function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "" : path.slice(0, i);
}

async function files(s: Session, main: HTMLElement, parts: string[]): Promise<void> {
  const list = await s.api.call<{ connections: Connection[] }>("GET", "/v1/connections");
  const conn = parts[0] || list.connections[0]?.name;
  if (!conn) {
    replace(main, h("h1", {}, "Files"), h("p", {}, "No connection yet: create one under Connections."));
    return;
  }
  const dir = parts.slice(1).filter((p) => p !== "").join("/");
  const error = alertRegion();
  const status = statusRegion();
  status.textContent = Date.now() < flash.until && flash.where === `${conn}/${dir}` ? flash.text : "";
  const href = (d: string) => `#/files/${encodeURIComponent(conn)}/${d.split("/").map(encodeURIComponent).join("/")}`;
  const reload = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  const connUrl = `/v1/connections/${encodeURIComponent(conn)}`;

  const picker = h(
    "select",
    {
      id: "files-conn",
      onchange: (ev: Event) => {
        location.hash = `#/files/${encodeURIComponent((ev.target as HTMLSelectElement).value)}/`;
      },
    },
    list.connections.map((c) => h("option", { value: c.name, selected: c.name === conn }, c.name)),
  );

  // The breadcrumb: the connection, then each folder down to this one.
  const crumbs: Node[] = [h("a", { href: href("") }, conn)];
  let walked = "";
  for (const part of dir ? dir.split("/") : []) {
    walked = walked ? `${walked}/${part}` : part;
    crumbs.push(document.createTextNode(" / "), h("a", { href: href(walked) }, part));
  }

  const entries: Entry[] = [];
  let cursor: string | null = "";
  for (let page = 0; cursor !== null && page < 20; page++) {
    const q: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const got: { entries: Entry[]; next_cursor: string | null } = await s.api.call(
      "GET",
      `${connUrl}/list/${pathUrl(dir)}?limit=1000${q}`,
    );
    entries.push(...got.entries);
    cursor = got.next_cursor;
  }

  const events = h("section", { class: "card events", hidden: true, "aria-label": "Events of a file" });
  const showEvents = async (path: string) => {
    events.hidden = false;
    replace(events, h("h2", {}, `Events of ${path}`), h("p", {}, "Loading…"));
    try {
      // The hub keeps this file's events only (its path, or a move's `from`).
      const found: any[] = [];
      let c = "";
      for (let page = 0; page < 20; page++) {
        const got: { events: any[]; next_cursor: string; has_more: boolean } = await s.api.call(
          "GET",
          `/v1/events?connection=${encodeURIComponent(conn)}&path=${encodeURIComponent(path)}&limit=1000${
            c ? `&cursor=${encodeURIComponent(c)}` : ""
          }`,
        );
        found.push(...got.events);
        if (!got.has_more) break;
        c = got.next_cursor;
      }
      replace(
        events,
        h("h2", {}, `Events of ${path}`),
        found.length
          ? h(
              "table",
              {},
              h("thead", {}, h("tr", {}, ["When", "What", "Size", "Made"].map((t) => h("th", { scope: "col" }, t)))),
              h(
                "tbody",
                {},
                found.map((e) =>
                  h(
                    "tr",
                    {},
                    h("td", {}, when(e.at)),
                    h("td", {}, e.from && e.from !== e.path ? `${e.type} from ${e.from}` : e.from ? `${e.type} to ${e.path}` : e.type),
                    h("td", {}, e.size === undefined ? "—" : size(e.size)),
                    h("td", {}, e.origin === "provider" ? "outside ferry" : "through ferry"),
                  ),
                ),
              ),
            )
          : h("p", {}, "No event recorded for this file."),
      );
    } catch (e) {
      replace(events, h("h2", {}, `Events of ${path}`), alertRegion());
      (events.lastChild as HTMLElement).textContent = errorText(e);
    }
  };

  const download = async (e: Entry) => {
    status.textContent = `Downloading ${e.name}…`;
    try {
      // From the nearest spoke too: the hub carries no file content.
      const node = await nearestNode(s.api);
      const via = node.name === "hub" ? "the hub" : `spoke ${node.name}`;
      const resp = await new Api(node.base, s.api.token).raw("GET", `${connUrl}/files/${pathUrl(e.path)}`);
      const total = Number(resp.headers.get("Content-Length") ?? NaN);
      let shown = 0;
      const saved = await saveStreaming(resp, e.name, (bytes) => {
        // Four times a second at most: the status is read out.
        if (performance.now() - shown < 250) return;
        shown = performance.now();
        const of = Number.isFinite(total) && total > 0 ? ` of ${size(total)} (${Math.floor((100 * bytes) / total)}%)` : "";
        status.textContent = `Downloading ${e.name}: ${size(bytes)}${of}…`;
      });
      let got: number;
      if (saved !== null) {
        got = saved;
        status.dataset.saved = "streamed";
      } else {
        // No way to stream it to disk here: read whole, then saved.
        const blob = await resp.blob();
        got = blob.size;
        const url = URL.createObjectURL(blob);
        const a = h("a", { href: url, download: e.name });
        document.body.appendChild(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60_000);
        status.dataset.saved = "in-memory";
      }
      status.textContent = `Downloaded ${e.name} (${size(got)}) through ${via}.`;
    } catch (err) {
      status.textContent = "";
      error.textContent = errorText(err);
    }
  };

  const rows = entries.map((e) => {
    const actions =
      e.type === "folder"
        ? [
            h(
              "button",
              {
                type: "button",
                class: "danger",
                onclick: async () => {
                  if (!confirm(`Delete the folder ${e.path} and everything in it?`)) return;
                  try {
                    await s.api.call("DELETE", `${connUrl}/folders/${pathUrl(e.path)}?recursive=true`);
                    reload();
                  } catch (err) {
                    error.textContent = errorText(err);
                  }
                },
              },
              "Delete",
            ),
          ]
        : [
            h("button", { type: "button", onclick: () => download(e) }, "Download"),
            h(
              "button",
              {
                type: "button",
                onclick: async () => {
                  const to = prompt(`Move or rename ${e.path} to:`, e.path);
                  if (!to || to === e.path) return;
                  try {
                    await s.api.call("POST", `${connUrl}/move`, { json: { from: e.path, to } });
                    reload();
                  } catch (err) {
                    error.textContent = errorText(err);
                  }
                },
              },
              "Rename",
            ),
            h("button", { type: "button", onclick: () => showEvents(e.path) }, "Events"),
            h(
              "button",
              {
                type: "button",
                class: "danger",
                onclick: async () => {
                  if (!confirm(`Delete ${e.path}?`)) return;
                  try {
                    await s.api.call("DELETE", `${connUrl}/files/${pathUrl(e.path)}`);
                    reload();
                  } catch (err) {
                    error.textContent = errorText(err);
                  }
                },
              },
              "Delete",
            ),
          ];
    return h(
      "tr",
      { "data-path": e.path },
      h("td", { class: "name" }, e.type === "folder" ? h("a", { href: href(e.path) }, `${e.name}/`) : e.name),
      h("td", {}, e.type === "folder" ? "folder" : size(e.size ?? 0)),
      h("td", { class: "mono" }, e.type === "folder" ? "" : String(e.size ?? 0)),
      h("td", {}, e.type === "folder" ? "" : when(e.modified_at)),
      h("td", { class: "actions" }, actions),
    );
  });

  // Uploading: tus through the nearest spoke, resumable if the link drops.
  const fileInput = h("input", { id: "upload-file", type: "file" });
  const progress = h("progress", { id: "upload-progress", max: 100, value: 0, hidden: true });
  const uploadForm = h(
    "form",
    { class: "card upload" },
    h("h2", {}, "Upload"),
    h("div", { class: "field" }, h("label", { for: "upload-file" }, `File to upload into ${dir || "the top folder"}`), fileInput),
    h("button", { type: "submit" }, "Upload"),
    progress,
  );
  uploadForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = fileInput.files?.[0];
    if (!file) {
      error.textContent = "Choose a file first.";
      return;
    }
    error.textContent = "";
    status.textContent = "Finding the nearest spoke…";
    const node = await nearestNode(s.api);
    const target = dir ? `${dir}/${file.name}` : file.name;
    const via = node.name === "hub" ? "the hub" : `spoke ${node.name}`;
    progress.hidden = false;
    progress.value = 0;
    await new Promise<void>((resolve) => {
      const upload = new tus.Upload(file, {
        endpoint: `${node.base}${connUrl}/uploads?path=${encodeURIComponent(target)}`,
        headers: { Authorization: `Bearer ${s.api.token}` },
        metadata: { filetype: file.type || "application/octet-stream" },
        chunkSize: 16 * 1024 * 1024,
        retryDelays: [0, 1000, 3000, 5000, 10000],
        removeFingerprintOnSuccess: true,
        onProgress: (sent, total) => {
          const pct = total ? Math.floor((sent / total) * 100) : 100;
          progress.value = pct;
          status.textContent = `Uploading ${file.name} through ${via}: ${pct} % (${size(sent)} of ${size(total)})`;
        },
        onSuccess: () => {
          // Said again once the listing is drawn with the new file.
          flash = {
            text: `Uploaded ${file.name} (${size(file.size)}) through ${via}.`,
            where: `${conn}/${dir}`,
            until: Date.now() + 10_000,
          };
          status.textContent = flash.text;
          progress.hidden = true;
          resolve();
          setTimeout(reload, 0);
        },
        onError: (err) => {
          const resp = (err as tus.DetailedError).originalResponse;
          let text = String(err.message ?? err);
          const body = resp?.getBody();
          if (body) {
            try {
              const p = JSON.parse(body);
              text = `${p.title ?? "Upload failed"}: ${p.detail ?? ""} (${p.code ?? resp?.getStatus()})`;
            } catch {
              // Not a problem document: the library's message stays.
            }
          }
          status.textContent = "";
          error.textContent = `Upload failed: ${text}`;
          progress.hidden = true;
          resolve();
        },
      });
      upload.start();
    });
  });

  const folderName = h("input", { id: "folder-name", autocomplete: "off", required: true });
  const folderForm = h(
    "form",
    { class: "inline" },
    h("label", { for: "folder-name" }, "New folder"),
    folderName,
    h("button", { type: "submit" }, "Create"),
  );
  folderForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const path = dir ? `${dir}/${folderName.value.trim()}` : folderName.value.trim();
    try {
      await s.api.call("POST", `${connUrl}/folders/${pathUrl(path)}`);
      reload();
    } catch (e) {
      error.textContent = errorText(e);
    }
  });

  replace(
    main,
    h("h1", {}, "Files"),
    h("div", { class: "toolbar" }, h("label", { for: "files-conn" }, "Connection"), picker, folderForm),
    h("p", { class: "crumbs" }, crumbs, dir ? [" · ", h("a", { href: href(parentOf(dir)) }, "up")] : []),
    error,
    status,
    h(
      "table",
      { id: "files" },
      h("thead", {}, h("tr", {}, ["Name", "Size", "Bytes", "Modified", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 5 }, "This folder is empty."))),
    ),
    uploadForm,
    events,
  );
}

interface Key {
  id: string;
  prefix: string;
  created_at: number;
  revoked_at: number | null;
}

async function keys(s: Session, main: HTMLElement): Promise<void> {
  const error = alertRegion();
  const shown = h("div", { class: "card new-key", hidden: true });
  const tbody = h("tbody", {});
  const draw = async () => {
    const list = await s.api.call<{ keys: Key[] }>("GET", "/v1/keys");
    replace(
      tbody,
      list.keys.map((k) =>
        h(
          "tr",
          { "data-key": k.id },
          h("td", { class: "mono" }, k.id),
          h("td", { class: "mono" }, `${k.prefix}…`),
          h("td", {}, when(k.created_at)),
          h("td", {}, k.revoked_at ? `revoked ${when(k.revoked_at)}` : "active"),
          h(
            "td",
            { class: "actions" },
            k.revoked_at
              ? ""
              : h(
                  "button",
                  {
                    type: "button",
                    class: "danger",
                    onclick: async () => {
                      if (!confirm(`Revoke ${k.prefix}…? Requests with it will fail.`)) return;
                      try {
                        await s.api.call("DELETE", `/v1/keys/${encodeURIComponent(k.id)}`);
                        await draw();
                      } catch (e) {
                        // Revoking the key this page signed in with ends the session.
                        if (e instanceof ApiError && e.status === 401) return s.signOut();
                        error.textContent = errorText(e);
                      }
                    },
                  },
                  "Revoke",
                ),
          ),
        ),
      ),
    );
  };
  const create = h(
    "button",
    {
      type: "button",
      onclick: async () => {
        error.textContent = "";
        try {
          const made = await s.api.call<Key & { key: string }>("POST", "/v1/keys");
          showOnce(shown, "new-key", "Copy it now: it is shown this once.", made.key, "New API key");
          await draw();
        } catch (e) {
          error.textContent = errorText(e);
        }
      },
    },
    "Create API key",
  );
  await draw();
  replace(
    main,
    h("h1", {}, "API keys"),
    error,
    h(
      "table",
      { id: "keys" },
      h("thead", {}, h("tr", {}, ["ID", "Key", "Created", "State", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      tbody,
    ),
    create,
    shown,
  );
}

interface Endpoint {
  id: string;
  url: string;
  events: string[] | null;
  created_at: number;
  disabled_at: number | null;
  disabled_reason: string | null;
}

interface Delivery {
  id: string;
  type: string;
  state: string;
  created_at: number;
  attempts: { attempt: number; status: number | null; error: string | null }[];
}

async function webhooks(s: Session, main: HTMLElement): Promise<void> {
  const error = alertRegion();
  const { endpoints } = await s.api.call<{ endpoints: Endpoint[] }>("GET", "/v1/webhooks");
  const deliveries = h("section", { class: "card", hidden: true, "aria-label": "Deliveries" });
  const showDeliveries = async (id: string) => {
    deliveries.hidden = false;
    try {
      const d = await s.api.call<{ deliveries: Delivery[] }>("GET", `/v1/webhooks/${encodeURIComponent(id)}/deliveries`);
      replace(
        deliveries,
        h("h2", {}, `Deliveries to ${id}`),
        d.deliveries.length
          ? h(
              "table",
              {},
              h("thead", {}, h("tr", {}, ["Message", "Event", "State", "Last attempt", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
              h(
                "tbody",
                {},
                d.deliveries.map((x) => {
                  const last = x.attempts[x.attempts.length - 1];
                  return h(
                    "tr",
                    {},
                    h("td", { class: "mono" }, x.id),
                    h("td", {}, x.type),
                    h("td", {}, x.state),
                    h("td", {}, last ? `#${last.attempt}: ${last.status ?? last.error ?? "no answer"}` : "—"),
                    h(
                      "td",
                      {},
                      h(
                        "button",
                        {
                          type: "button",
                          onclick: async () => {
                            try {
                              await s.api.call(
                                "POST",
                                `/v1/webhooks/${encodeURIComponent(id)}/deliveries/${encodeURIComponent(x.id)}/redeliver`,
                              );
                              await showDeliveries(id);
                            } catch (e) {
                              error.textContent = errorText(e);
                            }
                          },
                        },
                        "Redeliver",
                      ),
                    ),
                  );
                }),
              ),
            )
          : h("p", {}, "No delivery yet."),
      );
    } catch (e) {
      error.textContent = errorText(e);
    }
  };
  const url = h("input", { id: "webhook-url", type: "url", required: true, autocomplete: "off" });
  const secret = h("div", { class: "card", hidden: true });
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "New endpoint"),
    h("div", { class: "field" }, h("label", { for: "webhook-url" }, "URL"), url),
    h("button", { type: "submit" }, "Add endpoint"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const made = await s.api.call<Endpoint & { secret: string }>("POST", "/v1/webhooks", {
        json: { url: url.value.trim() },
      });
      showOnce(secret, "webhook-secret", "Copy it now: it is shown this once.", made.secret, `Signing secret of ${made.id}`);
    } catch (e) {
      error.textContent = errorText(e);
    }
  });
  replace(
    main,
    h("h1", {}, "Webhooks"),
    error,
    endpoints.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["ID", "URL", "Events", "State", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            endpoints.map((e) =>
              h(
                "tr",
                {},
                h("td", { class: "mono" }, e.id),
                h("td", {}, e.url),
                h("td", {}, e.events ? e.events.join(", ") : "all"),
                h("td", {}, e.disabled_at ? `disabled (${e.disabled_reason})` : "enabled"),
                h(
                  "td",
                  { class: "actions" },
                  h("button", { type: "button", onclick: () => showDeliveries(e.id) }, "Deliveries"),
                  h(
                    "button",
                    {
                      type: "button",
                      class: "danger",
                      onclick: async () => {
                        if (!confirm(`Delete the endpoint ${e.url}?`)) return;
                        try {
                          await s.api.call("DELETE", `/v1/webhooks/${encodeURIComponent(e.id)}`);
                          window.dispatchEvent(new HashChangeEvent("hashchange"));
                        } catch (err) {
                          error.textContent = errorText(err);
                        }
                      },
                    },
                    "Delete",
                  ),
                ),
              ),
            ),
          ),
        )
      : h("p", {}, "No endpoint yet."),
    form,
    secret,
    deliveries,
  );
}

interface UsageRow {
  day?: string;
  node?: string;
  connection_id?: string;
  bytes_in: number;
  bytes_out: number;
  uploads: number;
  downloads: number;
}

/** One usage table with a bar per row, `label` naming its rows. */
function usageTable(caption: string, rows: UsageRow[], label: (r: UsageRow) => string[], heads: string[]): HTMLElement {
  const most = Math.max(1, ...rows.map((r) => r.bytes_in + r.bytes_out));
  return h(
    "table",
    { class: "usage" },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, [...heads, "In", "Out", "Uploads", "Downloads", "In + out"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      rows.map((r) => {
        const bar = h("span", { class: "bar", "aria-hidden": "true" });
        // Set through the CSS object model, which the page's policy allows.
        bar.style.width = `${Math.round(((r.bytes_in + r.bytes_out) / most) * 100)}%`;
        return h(
          "tr",
          {},
          label(r).map((v) => h("td", {}, v)),
          h("td", {}, size(r.bytes_in)),
          h("td", {}, size(r.bytes_out)),
          h("td", {}, String(r.uploads)),
          h("td", {}, String(r.downloads)),
          h("td", { class: "barcell" }, bar),
        );
      }),
    ),
  );
}

async function usage(s: Session, main: HTMLElement): Promise<void> {
  const [byNode, byConn, conns] = await Promise.all([
    s.api.call<{ usage: UsageRow[] }>("GET", "/v1/usage?group_by=day,node"),
    s.api.call<{ usage: UsageRow[] }>("GET", "/v1/usage?group_by=day,connection"),
    s.api.call<{ connections: Connection[] }>("GET", "/v1/connections"),
  ]);
  const connOf = new Map(conns.connections.map((c) => [c.id, c]));
  const fileRows = byConn.usage.filter((r) => r.connection_id);
  replace(
    main,
    h("h1", {}, "Usage"),
    byNode.usage.length
      ? usageTable("By day and node (the hub or a spoke)", byNode.usage, (r) => [r.day ?? "", r.node ?? ""], ["Day", "Node"])
      : h("p", {}, "Nothing counted yet."),
    fileRows.length
      ? usageTable(
          "By day and connection",
          fileRows,
          (r) => {
            const c = connOf.get(r.connection_id ?? "");
            return [r.day ?? "", c ? c.name : (r.connection_id ?? ""), c ? c.provider : "—"];
          },
          ["Day", "Connection", "Provider"],
        )
      : "",
  );
}

export const accountViews: Section[] = [
  { path: "connections", label: "Connections", view: connections },
  { path: "files", label: "Files", view: files },
  { path: "keys", label: "API keys", view: keys },
  { path: "webhooks", label: "Webhooks", view: webhooks },
  { path: "usage", label: "Usage", view: usage },
];
