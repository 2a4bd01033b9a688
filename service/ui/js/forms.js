// Form helpers: labelled fields with an error slot each, and the mapping of the API's validation errors onto the
// field they concern (a bad spec field, a taken name, a file the API could not read).

import { h } from "./dom.js";

/** A labelled input with a hint and an error slot; `input` is the control element. */
export function field(name, label, input, hint) {
  input.id ||= `f-${name}`;
  input.name ||= name;
  return h(
    "div",
    { class: "field", dataset: { field: name } },
    h("label", { for: input.id }, label),
    input,
    hint ? h("div", { class: "hint" }, hint) : null,
    h("div", { class: "field-error", id: `${input.id}-error`, role: "alert" }),
  );
}

export function clearErrors(form) {
  for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
  for (const el of form.querySelectorAll(".invalid")) el.classList.remove("invalid");
}

export function setError(form, name, message) {
  const wrap = form.querySelector(`.field[data-field="${name}"]`) || form.querySelector('.field[data-field="_form"]');
  if (!wrap) return;
  const slot = wrap.querySelector(".field-error");
  slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
  wrap.querySelector("input, textarea, select")?.classList.add("invalid");
}

/**
 * Put an ApiError's message next to the field it concerns. `fields` lists the form's field names; spec problems
 * arrive as "the spec is invalid: name: ...; tasks.0.name: ..." (one "location: message" per problem), FastAPI's
 * own 422s as an `errors` list with a `loc`. Anything else goes to `fallback` (the file field for uploads).
 */
export function showApiError(form, err, fields, fallback = "_form") {
  const known = new Set(fields);
  // The longest prefix of a location ("overrides.epochs", then "overrides") that names a field of the form.
  const resolve = (loc) => {
    for (let n = loc.length; n > 0; n -= 1) {
      const name = loc.slice(0, n).join(".");
      if (known.has(name)) return name;
    }
    return fallback;
  };
  const placed = [];
  if (Array.isArray(err.body?.errors)) {
    for (const e of err.body.errors) {
      const loc = (e.loc || []).filter((p) => p !== "body" && p !== "query").map(String);
      placed.push([resolve(loc), `${loc.join(".") || "request"}: ${e.msg}`]);
    }
  } else {
    const m = /^the spec is invalid: (.*)$/s.exec(err.message);
    if (m) {
      for (const problem of m[1].split("; ")) placed.push([resolve(problem.split(":", 1)[0].split(".")), problem]);
    } else if (err.status === 409 && known.has("name")) {
      placed.push(["name", err.message]);
    } else {
      const named = fields.find((f) => f !== fallback && new RegExp(`'${f}'|\\b${f}\\b:`).test(err.message));
      placed.push([named || fallback, err.message]);
    }
  }
  for (const [name, message] of placed) setError(form, name, message);
  focusFirstError(form);
}

/** Bring the first field with an error into view (below the sticky header) and put the cursor in it. */
export function focusFirstError(form) {
  const first = form.querySelector(".invalid") || form.querySelector(".field-error:not(:empty)");
  first?.scrollIntoView({ block: "center" });
  if (first?.focus) first.focus({ preventScroll: true });
}

/** Parse an optional JSON field; an unparseable one is reported next to it and returns undefined. */
export function jsonField(form, name, text, errors) {
  if (!text.trim()) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    errors.push([name, `not valid JSON: ${e.message}`]);
    return undefined;
  }
}
