// Teachers and datasets: paginated lists, a page per item, and upload forms (admin keys only; the API refuses
// uploads from predict keys whatever the page shows).

import { api, download } from "../api.js";
import { clearErrors, field, focusFirstError, jsonField, setError, showApiError } from "../forms.js";
import { add, facts, fmtBytes, fmtTime, h, pager, section, table, toast } from "../dom.js";

const PAGE = 25;

function offsetOf(ctx) {
  return Math.max(0, Number.parseInt(ctx.params.get("offset") || "0", 10) || 0);
}

export function artifactRow(label, artifact) {
  if (!artifact) return null;
  const btn = h("button", { type: "button", class: "small" }, "Download");
  btn.addEventListener("click", () => download(artifact.url, `${label}-${artifact.sha256.slice(0, 12)}`).catch((e) => toast(e.message)));
  return [label, h("span", {}, h("code", { class: "sha" }, artifact.sha256), ` ${fmtBytes(artifact.size_bytes)} `, btn)];
}

async function submitUpload(form, path, file, spec, fields, onDone) {
  const data = new FormData();
  data.append("spec", JSON.stringify(spec));
  data.append("file", file);
  const status = form.querySelector(".form-status");
  status.textContent = "Uploading…";
  try {
    const row = await api(path, { method: "POST", form: data });
    status.textContent = "";
    onDone(row);
  } catch (err) {
    status.textContent = "";
    showApiError(form, err, fields, "file");
  }
}

// ------------------------------------------------------------------------------------------------------ teachers

function teacherForm(ctx) {
  const file = h("input", { type: "file", accept: ".onnx,.pt,.pth,.ts" });
  const name = h("input", { type: "text", autocomplete: "off", placeholder: "digits-mlp" });
  const shape = h("input", { type: "text", placeholder: "1,8,8" });
  const outputs = h("textarea", { rows: 2, placeholder: '{"digit": "digit"}' });
  const features = h("textarea", { rows: 1, placeholder: '["feat_0"]' });
  const tasks = h("textarea", { rows: 3, placeholder: '[{"name": "low", "output": "digit", "classes": [0, 1, 2, 3, 4]}]' });
  const classNames = h("textarea", { rows: 2, placeholder: '{"digit": ["0", "1", "2"]}' });
  const description = h("textarea", { rows: 2 });
  const fields = ["file", "name", "input_shape", "outputs", "features", "tasks", "class_names", "description"];
  const form = h(
    "form",
    { class: "upload", id: "teacher-upload", novalidate: true },
    field("file", "Model file (ONNX or TorchScript)", file),
    field("name", "Name", name, "letters, digits, '.', '_' or '-'"),
    field("input_shape", "Input shape (C,H,W)", shape, "required for TorchScript; read from the graph for ONNX"),
    field("outputs", "Outputs (JSON, optional)", outputs, "logical name → graph output name or index"),
    field("features", "Feature outputs (JSON, optional)", features, "default: ONNX outputs named feat_*"),
    field("tasks", "Default tasks (JSON, optional)", tasks),
    field("class_names", "Class names (JSON, optional)", classNames),
    field("description", "Description", description),
    h("div", { class: "field", dataset: { field: "_form" } }, h("div", { class: "field-error", role: "alert" })),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Upload teacher"), h("span", { class: "form-status" })),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const errors = [];
    if (!file.files.length) errors.push(["file", "choose the model file to upload"]);
    if (!name.value.trim()) errors.push(["name", "give the teacher a name"]);
    const spec = { name: name.value.trim() };
    if (shape.value.trim()) {
      const dims = shape.value.split(/[ ,x×]+/).filter(Boolean).map(Number);
      if (dims.length !== 3 || dims.some((d) => !Number.isInteger(d) || d < 1)) errors.push(["input_shape", "three positive integers: C,H,W"]);
      else spec.input_shape = dims;
    }
    for (const [key, el] of [["outputs", outputs], ["features", features], ["tasks", tasks], ["class_names", classNames]]) {
      const value = jsonField(form, key, el.value, errors);
      if (value !== undefined) spec[key] = value;
    }
    if (description.value.trim()) spec.description = description.value;
    if (errors.length) {
      for (const [f, m] of errors) setError(form, f, m);
      focusFirstError(form);
      return;
    }
    submitUpload(form, "/v1/teachers", file.files[0], spec, fields, (row) => ctx.go(ctx.link("teachers", row.id)));
  });
  return form;
}

async function teacherList(main, ctx) {
  const offset = offsetOf(ctx);
  const page = await api("/v1/teachers", { query: { offset, limit: PAGE }, signal: ctx.signal });
  add(main, 
    h("h1", {}, "Teachers"),
    section(
      "Uploaded teachers",
      table(
        ["name", "format", "input", "outputs", "default tasks", "uploaded"],
        page.data.map((t) => [
          h("a", { href: ctx.link("teachers", t.id) }, t.name),
          t.format,
          t.input_shape.join("×"),
          Object.entries(t.output_sizes).map(([k, v]) => `${k} (${v})`).join(", "),
          t.tasks.map((x) => x.name).join(", ") || "–",
          fmtTime(t.created_at),
        ]),
        { empty: "No teachers yet." },
      ),
      pager({ offset, limit: PAGE, count: page.count, go: (o) => ctx.go(ctx.link("teachers", null, { offset: o })) }),
    ),
    ctx.admin ? section("Upload a teacher", teacherForm(ctx)) : null,
  );
}

async function teacherPage(main, ctx) {
  const t = await api(`/v1/teachers/${encodeURIComponent(ctx.id)}`, { signal: ctx.signal });
  add(main, 
    h("p", { class: "crumbs" }, h("a", { href: "#/teachers" }, "Teachers"), " / ", t.name),
    h("h1", {}, t.name),
    section(
      "Teacher",
      facts([
        ["id", h("code", {}, t.id)],
        ["format", `${t.format} (${t.filename})`],
        ["input shape", t.input_shape.join(" × ")],
        ["features", t.features.map((f, i) => `${f} (${t.feature_dims[i]})`).join(", ") || "–"],
        ["description", t.description || "–"],
        ["uploaded", fmtTime(t.created_at)],
        artifactRow("model file", t.artifact),
      ]),
      ctx.admin ? h("p", {}, h("a", { class: "button primary", href: ctx.link("jobs", "new", { teacher: t.id }), id: "factorize" }, "Factorize this teacher…")) : null,
    ),
    section(
      "Outputs",
      table(
        ["output", "graph output", "classes", "class names"],
        Object.entries(t.outputs).map(([k, v]) => [k, String(v), String(t.output_sizes[k] ?? "–"), (t.class_names[k] || []).join(", ") || "–"]),
      ),
    ),
    section(
      "Default tasks",
      table(
        ["task", "output", "classes"],
        t.tasks.map((x) => [x.name, x.output || x.name, x.classes ? x.classes.join(", ") : "all"]),
        { empty: "None: jobs use one task per output." },
      ),
    ),
  );
}

export async function renderTeachers(main, ctx) {
  return ctx.id ? teacherPage(main, ctx) : teacherList(main, ctx);
}

// ------------------------------------------------------------------------------------------------------ datasets

function datasetForm(ctx) {
  const file = h("input", { type: "file", accept: ".npz" });
  const name = h("input", { type: "text", autocomplete: "off" });
  const labels = h("input", { type: "text", placeholder: "bright, half" });
  const description = h("textarea", { rows: 2 });
  const fields = ["file", "name", "labels", "description"];
  const form = h(
    "form",
    { class: "upload", id: "dataset-upload", novalidate: true },
    field("file", "Data file (.npz: x plus one integer label array per task)", file),
    field("name", "Name", name, "letters, digits, '.', '_' or '-'"),
    field("labels", "Label arrays to keep (optional)", labels, "comma-separated; default: all"),
    field("description", "Description", description),
    h("div", { class: "field", dataset: { field: "_form" } }, h("div", { class: "field-error", role: "alert" })),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Upload dataset"), h("span", { class: "form-status" })),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const errors = [];
    if (!file.files.length) errors.push(["file", "choose the .npz file to upload"]);
    if (!name.value.trim()) errors.push(["name", "give the dataset a name"]);
    if (errors.length) {
      for (const [f, m] of errors) setError(form, f, m);
      focusFirstError(form);
      return;
    }
    const spec = { name: name.value.trim() };
    const keep = labels.value.split(",").map((x) => x.trim()).filter(Boolean);
    if (keep.length) spec.labels = keep;
    if (description.value.trim()) spec.description = description.value;
    submitUpload(form, "/v1/datasets", file.files[0], spec, fields, (row) => ctx.go(ctx.link("datasets", row.id)));
  });
  return form;
}

async function datasetList(main, ctx) {
  const offset = offsetOf(ctx);
  const page = await api("/v1/datasets", { query: { offset, limit: PAGE }, signal: ctx.signal });
  add(main, 
    h("h1", {}, "Datasets"),
    section(
      "Datasets",
      h("p", { class: "hint" }, "Built-in generators (digits, dsprites) appear here once a job has used them."),
      table(
        ["name", "source", "input", "samples", "labels", "added"],
        page.data.map((d) => [
          h("a", { href: ctx.link("datasets", d.id) }, d.name),
          d.source,
          d.input_shape.join("×"),
          String(d.num_samples),
          Object.keys(d.classes).join(", "),
          fmtTime(d.created_at),
        ]),
        { empty: "No datasets yet." },
      ),
      pager({ offset, limit: PAGE, count: page.count, go: (o) => ctx.go(ctx.link("datasets", null, { offset: o })) }),
    ),
    ctx.admin ? section("Upload a dataset", datasetForm(ctx)) : null,
  );
}

async function datasetPage(main, ctx) {
  const d = await api(`/v1/datasets/${encodeURIComponent(ctx.id)}`, { signal: ctx.signal });
  add(main, 
    h("p", { class: "crumbs" }, h("a", { href: "#/datasets" }, "Datasets"), " / ", d.name),
    h("h1", {}, d.name),
    section(
      "Dataset",
      facts([
        ["id", h("code", {}, d.id)],
        ["source", d.source],
        ["input shape", d.input_shape.join(" × ")],
        ["samples", String(d.num_samples)],
        ["description", d.description || "–"],
        ["added", fmtTime(d.created_at)],
        artifactRow("data file", d.artifact),
      ]),
    ),
    section("Label arrays", table(["label", "classes"], Object.entries(d.classes).map(([k, v]) => [k, `${v.length}: ${v.join(", ")}`]))),
  );
}

export async function renderDatasets(main, ctx) {
  return ctx.id ? datasetPage(main, ctx) : datasetList(main, ctx);
}

