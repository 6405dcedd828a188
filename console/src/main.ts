// The ferry console: an account's view (signed in with an API key) and an
// operator's view (signed in with the admin token), on one page that
// talks to the hub's API, and to the nearest spoke for uploads.
import { Api, ApiError } from "./api";
import { h, replace } from "./dom";
import { accountViews } from "./account";
import { operatorViews } from "./operator";

/** The credential lives in this tab's session storage only. */
const TOKEN_KEY = "ferry.console.token";

export type Role = "account" | "operator";

export interface Session {
  api: Api;
  role: Role;
  /** Stops what the current view polls. */
  stops: (() => void)[];
  signOut: () => void;
}

/** A view: renders into `main` for the route's remaining parts. */
export type View = (s: Session, main: HTMLElement, parts: string[]) => Promise<void> | void;

export interface Section {
  path: string;
  label: string;
  view: View;
}

const root = document.getElementById("app") as HTMLElement;

/** How an error reads in the page. */
export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  return e instanceof Error ? e.message : String(e);
}

/** A region that reads out errors as they come. */
export function alertRegion(): HTMLElement {
  return h("p", { class: "error", role: "alert" });
}

/** A region that reads out progress politely. */
export function statusRegion(): HTMLElement {
  return h("p", { class: "status", role: "status", "aria-live": "polite" });
}

/** Which view a credential opens: an API key the account's, the admin token the operator's. */
async function whoIs(token: string): Promise<Role> {
  const api = new Api("", token);
  try {
    await api.call("GET", "/v1/connections");
    return "account";
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) throw e;
  }
  await api.call("GET", "/v1/accounts?limit=1");
  return "operator";
}

function signInPage(message = ""): void {
  const error = alertRegion();
  error.textContent = message;
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    spellcheck: "false",
    "aria-describedby": "token-help",
  });
  const form = h(
    "form",
    { class: "card signin" },
    h("h1", {}, "ferry console"),
    h("label", { for: "token" }, "API key or admin token"),
    input,
    h(
      "p",
      { id: "token-help", class: "help" },
      "An API key (fry_…) opens its account; the hub's admin token opens the operator's view. It is kept in this tab only and forgotten when the tab closes.",
    ),
    h("button", { type: "submit" }, "Sign in"),
    error,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    error.textContent = "";
    try {
      await whoIs(token);
      sessionStorage.setItem(TOKEN_KEY, token);
      location.hash = "";
      void start();
    } catch (e) {
      error.textContent =
        e instanceof ApiError && e.status === 401 ? "That key or token was not accepted." : errorText(e);
    }
  });
  replace(root, h("main", { id: "main" }, form));
  input.focus();
}

function signOut(message = ""): void {
  sessionStorage.removeItem(TOKEN_KEY);
  location.hash = "";
  signInPage(message);
}

async function start(): Promise<void> {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return signInPage();
  let role: Role;
  try {
    role = await whoIs(token);
  } catch (e) {
    return signOut(e instanceof ApiError && e.status === 401 ? "Signed out: that credential no longer works." : errorText(e));
  }
  const session: Session = { api: new Api("", token), role, stops: [], signOut: () => signOut() };
  const sections = role === "account" ? accountViews : operatorViews;
  const main = h("main", { id: "main", tabindex: "-1" });
  const links = sections.map((s) =>
    h("a", { href: `#/${s.path}`, "data-path": s.path }, s.label),
  );
  const header = h(
    "header",
    {},
    h("span", { class: "brand" }, "ferry"),
    h("span", { class: "role" }, role === "account" ? "account" : "operator"),
    h("nav", { "aria-label": "Sections" }, links),
    h("button", { type: "button", class: "quiet", onclick: () => signOut() }, "Sign out"),
  );
  replace(root, header, main);

  const route = async () => {
    for (const stop of session.stops.splice(0)) stop();
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    const section = sections.find((s) => s.path === parts[0]) ?? sections[0];
    for (const a of links) {
      if (a.dataset.path === section.path) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    replace(main);
    try {
      await section.view(session, main, parts.slice(1));
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return signOut("Signed out: that credential no longer works.");
      main.appendChild(alertRegion()).textContent = errorText(e);
    }
  };
  window.onhashchange = () => {
    void route().then(() => main.focus({ preventScroll: true }));
  };
  await route();
}

void start();
