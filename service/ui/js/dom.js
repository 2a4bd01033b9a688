// DOM helpers. Every piece of server data reaches the page as a text node or an attribute value set through the
// DOM API: nothing here parses HTML, so a teacher named "<img src=x onerror=...>" is shown as those characters.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function apply(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value" || key === "checked" || key === "disabled" || key === "selected") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  return el;
}

/** h("a", {href: "#/jobs", class: "x"}, "text", child, ...): an element; strings become text nodes. */
export function h(tag, props, ...children) {
  return append(apply(document.createElement(tag), props), children);
}

/** The same for SVG elements (charts). */
export function s(tag, props, ...children) {
  return append(apply(document.createElementNS(SVG_NS, tag), props), children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** el.append(...) that skips null, undefined and false (so `cond ? x : null` works) and flattens arrays. */
export function add(el, ...children) {
  return append(el, children);
}

/** Replace el's children. */
export function fill(el, ...children) {
  return append(clear(el), children);
}

export function shortId(id) {
  return String(id || "").slice(0, 8);
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function pct(x, digits = 1) {
  return x === null || x === undefined || Number.isNaN(Number(x)) ? "–" : `${(100 * Number(x)).toFixed(digits)} %`;
}

export function num(x, digits = 3) {
  return x === null || x === undefined || Number.isNaN(Number(x)) ? "–" : Number(x).toFixed(digits);
}

/** A status badge: its class names the status so the stylesheet colours it. */
export function badge(status) {
  return h("span", { class: `badge badge-${String(status).replace(/[^a-z]/g, "")}` }, status);
}

/** A horizontal bar for a fraction in [0, 1], with an accessible progressbar role. */
export function bar(fraction, { label, kind = "" } = {}) {
  const f = Math.max(0, Math.min(1, Number(fraction) || 0));
  const fill = h("div", { class: "bar-fill" });
  fill.style.width = `${(100 * f).toFixed(2)}%`;
  return h(
    "div",
    {
      class: ["bar", kind],
      role: "progressbar",
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": (100 * f).toFixed(0),
      "aria-label": label || "progress",
    },
    fill,
    h("span", { class: "bar-text" }, `${(100 * f).toFixed(0)} %`),
  );
}

export function table(headers, rows, { empty = "Nothing here yet.", cls = "" } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    { class: ["grid", cls] },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))),
  );
}

/** A definition list from [label, value] pairs. */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

export function errorBox(message) {
  return h("div", { class: "error", role: "alert" }, message);
}

/** Pagination controls for a list of `count` rows shown `limit` at a time from `offset`. */
export function pager({ offset, limit, count, go }) {
  const page = Math.floor(offset / limit) + 1;
  const pages = Math.max(1, Math.ceil(count / limit));
  return h(
    "nav",
    { class: "pager", "aria-label": "pages" },
    h("button", { type: "button", disabled: page <= 1, onclick: () => go(Math.max(0, offset - limit)) }, "‹ Previous"),
    h("span", {}, `page ${page} of ${pages} · ${count} in all`),
    h("button", { type: "button", disabled: page >= pages, onclick: () => go(offset + limit) }, "Next ›"),
  );
}

export async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Select and copy";
  }
  setTimeout(() => {
    button.textContent = "Copy";
  }, 1500);
}

/** A code block with a copy button. */
export function snippet(title, text) {
  const btn = h("button", { type: "button", class: "small" }, "Copy");
  btn.addEventListener("click", () => copyText(text, btn));
  return h("div", { class: "snippet" }, h("div", { class: "snippet-head" }, h("span", {}, title), btn), h("pre", {}, text));
}

/** A short message at the bottom of the window (failed downloads, copied snippets). */
export function toast(message) {
  const el = h("div", { class: "toast", role: "status" }, message);
  document.body.append(el);
  setTimeout(() => el.remove(), 6000);
}
