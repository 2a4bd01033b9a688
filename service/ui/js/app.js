// The console's shell: sign-in, navigation and a hash router (#/jobs/ID?status=running). Pages are modules under
// pages/ exporting render(main, ctx); ctx says who is signed in and carries an AbortSignal that fires when the
// user leaves the page, so live streams and polls stop with it.

import { ApiError, api, auth } from "./api.js";
import { add, clear, errorBox, fill, h } from "./dom.js";
import * as factorSets from "./pages/factor_sets.js";
import * as jobs from "./pages/jobs.js";
import * as overview from "./pages/overview.js";
import * as playground from "./pages/playground.js";
import * as teachers from "./pages/teachers.js";

const NAV = [
  ["overview", "Overview"],
  ["teachers", "Teachers"],
  ["datasets", "Datasets"],
  ["jobs", "Jobs"],
  ["factor-sets", "Factor sets"],
  ["playground", "Playground"],
];

const ROUTES = {
  overview: overview.render,
  teachers: teachers.renderTeachers,
  datasets: teachers.renderDatasets,
  jobs: jobs.render,
  "factor-sets": factorSets.render,
  playground: playground.render,
};

const state = { who: null, controller: null };

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "overview", id: parts[1] || null, params: new URLSearchParams(qs || "") };
}

/** "#/jobs?status=running&offset=50" from a page and its query (empty values dropped). */
export function link(page, id, query) {
  let out = `#/${page}`;
  if (id) out += `/${encodeURIComponent(id)}`;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== "") params.set(k, v);
  const qs = params.toString();
  return qs ? `${out}?${qs}` : out;
}

function header() {
  const who = state.who;
  const nav = h(
    "nav",
    { class: "nav", "aria-label": "main" },
    NAV.map(([page, label]) => h("a", { href: `#/${page}`, dataset: { page } }, label)),
  );
  const scope = who.scope === "anonymous" ? "no keys configured (open)" : `${who.scope} key ${who.key_prefix}`;
  const out = h("button", { type: "button", class: "link", id: "sign-out" }, "Sign out");
  out.addEventListener("click", () => {
    auth.clear();
    state.who = null;
    boot();
  });
  return h(
    "header",
    { class: "topbar" },
    h("a", { class: "brand", href: "#/overview" }, "KF console"),
    nav,
    h("div", { class: "who" }, h("span", { class: `scope scope-${who.scope}`, id: "scope" }, scope), who.scope === "anonymous" ? null : out),
  );
}

async function route() {
  if (!state.who) return;
  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  const { page, id, params } = parseHash();
  for (const a of document.querySelectorAll(".nav a")) a.classList.toggle("active", a.dataset.page === page);
  const main = clear(document.getElementById("main"));
  const render = ROUTES[page];
  if (!render) {
    add(main, errorBox(`There is no page '${page}'.`));
    return;
  }
  const ctx = {
    id,
    params,
    admin: state.who.scope === "admin" || state.who.scope === "anonymous",
    signal: controller.signal,
    who: state.who,
    link,
    go: (hash) => {
      location.hash = hash;
    },
  };
  main.setAttribute("aria-busy", "true");
  try {
    await render(main, ctx);
  } catch (err) {
    if (controller.signal.aborted) return;
    add(main, errorBox(err instanceof ApiError ? `${err.message} (HTTP ${err.status})` : String(err.message || err)));
  } finally {
    if (!controller.signal.aborted) main.setAttribute("aria-busy", "false");
  }
}

function signIn(message) {
  const root = clear(document.getElementById("app"));
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off", placeholder: "kf_…", required: true });
  const note = h("p", { class: "field-error", id: "sign-in-error", role: "alert" }, message || "");
  const form = h(
    "form",
    { class: "card sign-in", id: "sign-in" },
    h("h1", {}, "KF console"),
    h("p", {}, "Sign in with an API key. Create one on the server with ", h("code", {}, "kf keys create --scope admin"), " (or ", h("code", {}, "--scope predict"), " for a read-and-predict key)."),
    h("label", { for: "api-key" }, "API key"),
    input,
    note,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    h("p", { class: "hint" }, "The key is kept in this tab's session storage only and sent as an Authorization header."),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    auth.set(input.value);
    boot();
  });
  add(root, form);
  input.focus();
}

async function boot() {
  try {
    state.who = await api("/v1/whoami");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      const had = Boolean(auth.key);
      auth.clear();
      signIn(had ? err.message : "");
      return;
    }
    fill(document.getElementById("app"), errorBox(`The API did not answer: ${err.message}`));
    return;
  }
  const root = clear(document.getElementById("app"));
  add(root, header(), h("main", { id: "main", class: "main" }));
  document.body.classList.toggle("is-admin", state.who.scope === "admin" || state.who.scope === "anonymous");
  await route();
}

window.addEventListener("hashchange", route);
window.addEventListener("kf-unauthorized", () => {
  if (!state.who) return; // boot() is signing in and handles the 401 itself
  state.controller?.abort();
  auth.clear();
  state.who = null;
  signIn("The API key was refused (unknown, revoked or missing); sign in again.");
});
boot();
