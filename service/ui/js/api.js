// The console talks to the public API only, with the same API keys as any client. The key lives in this tab's
// sessionStorage (gone when the tab closes) and travels in the Authorization header: never in a URL, so it
// never reaches access logs, browser history or a Referer.

const KEY = "kf-api-key";

export const auth = {
  get key() {
    return sessionStorage.getItem(KEY) || "";
  },
  set(key) {
    sessionStorage.setItem(KEY, key.trim());
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.body = body;
  }
}

function headers(extra = {}) {
  const out = { ...extra };
  if (auth.key) out.Authorization = `Bearer ${auth.key}`;
  return out;
}

async function failure(response) {
  let body = null;
  let detail = `HTTP ${response.status}`;
  try {
    body = await response.json();
    detail = body.detail || body.error || detail;
  } catch {
    /* not JSON: keep the status line */
  }
  if (response.status === 401) window.dispatchEvent(new CustomEvent("kf-unauthorized", { detail }));
  return new ApiError(response.status, String(detail), body);
}

/** fetch() against the API: JSON in (`json`) or a FormData (`form`), JSON out; errors raise ApiError. */
export async function api(path, { method = "GET", json, form, signal, query } = {}) {
  const init = { method, signal, headers: headers({ Accept: "application/json" }) };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  const response = await fetch(url, init);
  if (!response.ok) throw await failure(response);
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/** Download an API resource as a file: fetched with the key in the header, handed to the browser as a blob. */
export async function download(path, filename) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * Follow a server-sent event stream. EventSource cannot send an Authorization header (and the key must not go
 * in the URL), so this reads the stream with fetch() and parses the SSE framing itself.
 * Resolves when the server closes the stream; rejects with ApiError on an HTTP error.
 */
export async function events(path, onEvent, { signal } = {}) {
  const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let type = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(type, JSON.parse(data.join("\n")));
    }
  }
}

/** Prometheus text exposition, parsed into {name: [{labels, value}]} (only what the overview needs). */
export function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const pair of (m[3] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    (out[m[1]] ||= []).push({ labels, value: Number(m[4]) });
  }
  return out;
}
