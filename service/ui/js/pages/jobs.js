// Jobs: a filtered, paginated list; a form to submit one (admin); and a job page that follows the job live
// (server-sent events from /v1/jobs/{id}/events, read with fetch so the key stays in a header).

import { ApiError, api, events } from "../api.js";
import { historyPoints, metricChart } from "../charts.js";
import { add, badge, bar, errorBox, facts, fill, fmtTime, h, json, pager, section, shortId, table, toast } from "../dom.js";
import { clearErrors, field, focusFirstError, jsonField, setError, showApiError } from "../forms.js";

const PAGE = 25;
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const FINAL = new Set(["succeeded", "failed", "cancelled"]);

export async function render(main, ctx) {
  if (ctx.id === "new") return newJob(main, ctx);
  if (ctx.id) return jobPage(main, ctx);
  return jobList(main, ctx);
}

// ----------------------------------------------------------------------------------------------------------- list

async function jobList(main, ctx) {
  const offset = Math.max(0, Number.parseInt(ctx.params.get("offset") || "0", 10) || 0);
  const status = ctx.params.get("status") || "";
  const name = ctx.params.get("name") || "";
  const page = await api("/v1/jobs", { query: { offset, limit: PAGE, status, name }, signal: ctx.signal });

  const statusSel = h("select", { id: "job-status-filter", name: "status" }, h("option", { value: "" }, "any status"), STATUSES.map((x) => h("option", { value: x, selected: x === status }, x)));
  const nameIn = h("input", { type: "search", id: "job-name-filter", name: "name", placeholder: "factor set name", value: name });
  const filters = h(
    "form",
    { class: "filters", id: "job-filters" },
    h("label", {}, "Status ", statusSel),
    h("label", {}, "Factor set ", nameIn),
    h("button", { type: "submit" }, "Filter"),
  );
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    ctx.go(ctx.link("jobs", null, { status: statusSel.value, name: nameIn.value.trim() }));
  });
  statusSel.addEventListener("change", () => filters.requestSubmit());

  add(main, 
    h(
      "div",
      { class: "title-row" },
      h("h1", {}, "Jobs"),
      ctx.admin ? h("a", { class: "button primary", href: "#/jobs/new", id: "new-job" }, "New job") : null,
    ),
    section(
      status || name ? "Matching jobs" : "All jobs",
      filters,
      table(
        ["job", "status", "stage", "factor set", "progress", "epoch", "attempts", "created"],
        page.data.map((j) => [
          h("a", { href: ctx.link("jobs", j.id) }, shortId(j.id)),
          badge(j.status),
          j.stage,
          j.factor_set_id ? h("a", { href: ctx.link("factor-sets", j.factor_set_id) }, j.factor_set_name) : j.factor_set_name,
          bar(j.progress, { label: `progress of job ${shortId(j.id)}`, kind: "small" }),
          `${j.epoch}/${j.epochs}`,
          `${j.attempts}/${j.max_attempts}`,
          fmtTime(j.created_at),
        ]),
        { empty: "No jobs match." },
      ),
      pager({ offset, limit: PAGE, count: page.count, go: (o) => ctx.go(ctx.link("jobs", null, { status, name, offset: o })) }),
    ),
  );
}

// ------------------------------------------------------------------------------------------------------- new job

async function newJob(main, ctx) {
  const [teachers, datasets] = await Promise.all([
    api("/v1/teachers", { query: { limit: 200 }, signal: ctx.signal }),
    api("/v1/datasets", { query: { limit: 200 }, signal: ctx.signal }),
  ]);
  const chosen = ctx.params.get("teacher");
  const teacher = h(
    "select",
    {},
    teachers.data.map((t) => h("option", { value: t.id, selected: t.id === chosen }, `${t.name} (${t.input_shape.join("×")})`)),
  );
  const uploaded = datasets.data.filter((d) => d.source === "npz");
  const dataset = h(
    "select",
    {},
    h("optgroup", { label: "built-in" }, h("option", { value: "builtin:digits" }, "digits"), h("option", { value: "builtin:dsprites" }, "dsprites")),
    uploaded.length ? h("optgroup", { label: "uploaded" }, uploaded.map((d) => h("option", { value: `id:${d.id}` }, d.name))) : null,
  );
  const recipe = h("input", { type: "text", placeholder: "default: the dataset's recipe" });
  const tasks = h("input", { type: "text", placeholder: "default: the teacher's tasks" });
  const epochs = h("input", { type: "number", min: 1 });
  const samples = h("input", { type: "number", min: 1 });
  const seed = h("input", { type: "number", min: 0 });
  const name = h("input", { type: "text", placeholder: "default: from the teacher" });
  const attempts = h("input", { type: "number", min: 1, max: 20 });
  const overrides = h("textarea", { rows: 5, placeholder: '{"train": {"batch_size": 32}, "factor": {"feature_dim": 8}}' });
  const fields = ["teacher_id", "dataset", "recipe", "tasks", "overrides.epochs", "overrides.samples", "overrides.seed", "overrides", "name", "max_attempts"];
  const form = h(
    "form",
    { class: "upload", id: "job-form", novalidate: true },
    field("teacher_id", "Teacher", teacher),
    field("dataset", "Dataset", dataset),
    field("recipe", "Recipe (optional)", recipe, "a built-in recipe name"),
    field("tasks", "Tasks (optional)", tasks, "comma-separated task names"),
    h("div", { class: "row3" }, field("overrides.epochs", "Epochs", epochs), field("overrides.samples", "Samples", samples), field("overrides.seed", "Seed", seed)),
    field("overrides", "More overrides (JSON, optional)", overrides, "train, factor and data fields of the recipe"),
    field("name", "Factor set name (optional)", name),
    field("max_attempts", "Max attempts (optional)", attempts),
    h("div", { class: "field", dataset: { field: "_form" } }, h("div", { class: "field-error", role: "alert" })),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Start job"), h("span", { class: "form-status" })),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const errors = [];
    if (!teacher.value) errors.push(["teacher_id", "upload a teacher first"]);
    const body = { teacher_id: teacher.value };
    const [kind, value] = dataset.value.split(/:(.*)/s);
    if (kind === "builtin") body.dataset = value;
    else body.dataset_id = value;
    if (recipe.value.trim()) body.recipe = recipe.value.trim();
    const taskList = tasks.value.split(",").map((x) => x.trim()).filter(Boolean);
    if (taskList.length) body.tasks = taskList;
    const extra = jsonField(form, "overrides", overrides.value, errors) || {};
    if (typeof extra !== "object" || Array.isArray(extra)) errors.push(["overrides", "a JSON object"]);
    body.overrides = { ...extra };
    for (const [key, el] of [["epochs", epochs], ["samples", samples], ["seed", seed]]) {
      if (el.value !== "") body.overrides[key] = Number(el.value);
    }
    if (name.value.trim()) body.name = name.value.trim();
    if (attempts.value !== "") body.max_attempts = Number(attempts.value);
    if (errors.length) {
      for (const [f, m] of errors) setError(form, f, m);
      focusFirstError(form);
      return;
    }
    try {
      const job = await api("/v1/jobs", { method: "POST", json: body });
      ctx.go(ctx.link("jobs", job.id));
    } catch (err) {
      showApiError(form, err, fields);
    }
  });
  add(main, 
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / new"),
    h("h1", {}, "Factorize a teacher"),
    ctx.admin ? section("New job", form) : errorBox("Submitting jobs needs an admin key."),
  );
}

// ------------------------------------------------------------------------------------------------------ job page

/** The live part of a job page: built once, updated in place on every event. */
class JobView {
  constructor(ctx, job) {
    this.ctx = ctx;
    this.curve = {}; // metric name -> [[step, value]]
    this.curveState = {};
    this.lastStep = -1;
    this.root = h("div", { class: "job-view" });
    this.head = h("div", { class: "title-row" });
    this.progress = h("div", { id: "job-progress-wrap" });
    this.summary = h("div", { class: "job-summary" });
    this.error = h("div");
    this.facts = h("div");
    this.metrics = h("div");
    this.chart = h("div", { id: "loss-curve" });
    this.result = h("div");
    add(this.root, 
      h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", shortId(job.id)),
      this.head,
      section("Progress", this.progress, this.summary, this.error, this.result),
      section("Loss", this.chart),
      h("div", { class: "two-col" }, section("Job", this.facts), section("Current epoch (running means)", this.metrics)),
      section("Recipe", h("details", {}, h("summary", {}, "The resolved recipe (JSON)"), json(job.recipe))),
    );
  }

  cancelButton(job) {
    if (!this.ctx.admin || FINAL.has(job.status)) return null;
    const btn = h("button", { type: "button", class: "danger", id: "cancel-job", disabled: Boolean(job.cancel_requested_at) }, job.cancel_requested_at ? "Cancelling…" : "Cancel job");
    btn.addEventListener("click", async () => {
      btn.disabled = true;
      try {
        this.update(await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" }));
      } catch (err) {
        btn.disabled = false;
        toast(err.message);
      }
    });
    return btn;
  }

  record(job) {
    if (job.step === this.lastStep || !job.metrics) return;
    this.lastStep = job.step;
    for (const [k, v] of Object.entries(job.metrics)) (this.curve[k] ||= []).push([job.step, Number(v)]);
  }

  update(job) {
    this.job = job;
    this.record(job);
    fill(this.head, h("h1", {}, `Job ${shortId(job.id)} `, badge(job.status)), this.cancelButton(job));
    fill(this.progress, bar(job.progress, { label: "job progress" }));
    this.progress.firstChild.id = "job-progress";
    fill(this.summary, 
      h("span", { id: "job-stage" }, `stage: ${job.stage}`),
      h("span", { id: "job-epoch" }, `epoch ${job.epoch} of ${job.epochs}`),
      h("span", {}, `step ${job.step} of ${job.steps_total}`),
      h("span", {}, `attempt ${job.attempts} of ${job.max_attempts}`),
    );
    fill(this.error, job.error ? errorBox(`Last error: ${job.error}`) : null);
    fill(this.result, 
      job.factor_set_id
        ? h("p", {}, "Registered factor set ", h("a", { href: this.ctx.link("factor-sets", job.factor_set_id), id: "job-factor-set" }, job.factor_set_name), ".")
        : null,
    );
    fill(this.facts, 
      facts([
        ["id", h("code", {}, job.id)],
        ["teacher", h("a", { href: this.ctx.link("teachers", job.teacher_id) }, shortId(job.teacher_id))],
        ["dataset", h("a", { href: this.ctx.link("datasets", job.dataset_id) }, shortId(job.dataset_id))],
        ["factor set name", job.factor_set_name],
        ["queue", job.queue],
        ["worker", job.worker || "–"],
        ["checkpoint", job.checkpoint_step === null ? "–" : `step ${job.checkpoint_step}`],
        ["resumed from", job.resumed_from_step === null ? "–" : `step ${job.resumed_from_step}`],
        ["created", fmtTime(job.created_at)],
        ["started", fmtTime(job.started_at) || "–"],
        ["last heartbeat", fmtTime(job.heartbeat_at) || "–"],
        ["finished", fmtTime(job.finished_at) || "–"],
        job.cancel_requested_at ? ["cancel requested", fmtTime(job.cancel_requested_at)] : null,
      ]),
    );
    const rows = Object.entries(job.metrics || {}).map(([k, v]) => [k, Number(v).toFixed(4)]);
    fill(this.metrics, table(["metric", "value"], rows, { empty: "No metrics yet." }));
    this.drawCurve();
  }

  drawCurve(history) {
    if (history) this.history = history;
    const final = Boolean(this.history?.length);
    const points = final ? historyPoints(this.history) : this.curve;
    const title = final ? "per-epoch means of the finished run" : "running means of the current epoch, live";
    fill(this.chart, metricChart(points, this.curveState, { xLabel: final ? "epoch" : "step", title }));
  }
}

async function jobPage(main, ctx) {
  let job = await api(`/v1/jobs/${encodeURIComponent(ctx.id)}`, { signal: ctx.signal });
  const view = new JobView(ctx, job);
  add(main, view.root);
  view.update(job);
  const finish = async (j) => {
    if (j.factor_set_id) {
      const fs = await api(`/v1/factor-sets/${j.factor_set_id}`, { signal: ctx.signal }).catch(() => null);
      if (fs?.metrics?.history?.length) view.drawCurve(fs.metrics.history);
    }
  };
  if (FINAL.has(job.status)) return finish(job);
  // Follow the job: the event stream while the server offers it, else a poll once a second.
  (async () => {
    let useEvents = true;
    while (!ctx.signal.aborted && !FINAL.has(job.status)) {
      try {
        if (useEvents) {
          await events(`/v1/jobs/${job.id}/events`, (_type, j) => {
            job = j;
            view.update(j);
          }, { signal: ctx.signal });
        } else {
          job = await api(`/v1/jobs/${job.id}`, { signal: ctx.signal });
          view.update(job);
          await new Promise((r) => setTimeout(r, 1000));
        }
      } catch (err) {
        if (ctx.signal.aborted) return;
        if (err instanceof ApiError && (err.status === 404 || err.status === 405) && useEvents) useEvents = false;
        else await new Promise((r) => setTimeout(r, 1000));
      }
    }
    if (!ctx.signal.aborted) finish(job);
  })();
}
