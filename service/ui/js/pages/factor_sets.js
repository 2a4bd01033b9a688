// Factor sets: a paginated list (filter by name; every version is a row) and a page per factor set with its
// tasks, teacher vs factor accuracy, evaluation results when the run has them, lineage and artifacts.

import { api } from "../api.js";
import { groupedBars, heatmap, historyPoints, metricChart } from "../charts.js";
import { add, facts, fmtBytes, fmtTime, h, json, num, pager, pct, section, shortId, table } from "../dom.js";
import { artifactRow } from "./teachers.js";

const PAGE = 25;

function meanFactorAccuracy(fs) {
  const values = fs.factors.map((f) => f.metrics?.factor_accuracy).filter((v) => Number.isFinite(v));
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
}

async function list(main, ctx) {
  const offset = Math.max(0, Number.parseInt(ctx.params.get("offset") || "0", 10) || 0);
  const name = ctx.params.get("name") || "";
  const page = await api("/v1/factor-sets", { query: { offset, limit: PAGE, name }, signal: ctx.signal });
  const nameIn = h("input", { type: "search", id: "fs-name-filter", placeholder: "exact name", value: name });
  const filters = h("form", { class: "filters", id: "fs-filters" }, h("label", {}, "Name ", nameIn), h("button", { type: "submit" }, "Filter"));
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    ctx.go(ctx.link("factor-sets", null, { name: nameIn.value.trim() }));
  });
  add(main, 
    h("h1", {}, "Factor sets"),
    section(
      name ? `Versions of ${name}` : "All factor sets, newest first",
      filters,
      table(
        ["name", "version", "tasks", "teacher", "dataset", "mean factor accuracy", "registered"],
        page.data.map((fs) => [
          h("a", { href: ctx.link("factor-sets", fs.id) }, fs.name),
          h("a", { href: ctx.link("factor-sets", null, { name: fs.name }), title: "all versions" }, `v${fs.version}`),
          fs.factors.map((f) => f.task).join(", "),
          fs.lineage.teacher.name,
          fs.lineage.dataset.name,
          pct(meanFactorAccuracy(fs)),
          fmtTime(fs.created_at),
        ]),
        { empty: "No factor sets yet: a successful job registers one." },
      ),
      pager({ offset, limit: PAGE, count: page.count, go: (o) => ctx.go(ctx.link("factor-sets", null, { name, offset: o })) }),
    ),
  );
}

function evaluation(fs) {
  const m = fs.metrics || {};
  const out = [];
  const tasks = fs.factors.map((f) => f.task);
  if (m.leakage?.matrix) {
    const lt = m.leakage.tasks || tasks;
    out.push(
      heatmap(lt.map((t) => `z_${t}`), lt, m.leakage.matrix, {
        title: "leakage: what each task's representation tells about every task (diagonal kept, off-diagonal leaked)",
        rowHead: "representation",
        colHead: "task",
      }),
      facts([
        ["mean diagonal", num(m.leakage.mean_diagonal)],
        ["mean off-diagonal", num(m.leakage.mean_off_diagonal)],
      ]),
    );
  }
  if (m.disentanglement && typeof m.disentanglement === "object") {
    const scalars = Object.entries(m.disentanglement).filter(([, v]) => typeof v === "number");
    if (scalars.length) out.push(h("h3", {}, "disentanglement"), facts(scalars.map(([k, v]) => [k, num(v)])));
  }
  if (m.transfer && typeof m.transfer === "object") {
    out.push(h("h3", {}, "transfer"), json(m.transfer));
  }
  return out;
}

async function detail(main, ctx) {
  const fs = await api(`/v1/factor-sets/${encodeURIComponent(ctx.id)}`, { signal: ctx.signal });
  const versions = await api("/v1/factor-sets", { query: { name: fs.name, limit: 50 }, signal: ctx.signal });
  const tasks = fs.factors.map((f) => f.task);
  const evalParts = evaluation(fs);
  const lin = fs.lineage;
  add(main, 
    h("p", { class: "crumbs" }, h("a", { href: "#/factor-sets" }, "Factor sets"), " / ", `${fs.name}:${fs.version}`),
    h(
      "div",
      { class: "title-row" },
      h("h1", {}, `${fs.name} `, h("span", { class: "version" }, `v${fs.version}`)),
      h("a", { class: "button primary", href: ctx.link("playground", null, { fs: fs.id }), id: "open-playground" }, "Try in the playground"),
    ),
    section(
      "Tasks",
      table(
        ["task", "output", "classes", "teacher accuracy", "factor accuracy", "gap"],
        fs.factors.map((f) => [
          f.task,
          f.output,
          `${f.classes.length}: ${f.class_names.slice(0, 8).join(", ")}${f.class_names.length > 8 ? ", …" : ""}`,
          pct(f.metrics?.teacher_accuracy),
          pct(f.metrics?.factor_accuracy),
          f.metrics?.gap_points === undefined ? "–" : `${num(f.metrics.gap_points, 1)} pts`,
        ]),
      ),
    ),
    h(
      "div",
      { class: "two-col" },
      section(
        "Accuracy",
        groupedBars(
          tasks,
          [
            { name: "teacher", values: fs.factors.map((f) => f.metrics?.teacher_accuracy) },
            { name: "factor network", values: fs.factors.map((f) => f.metrics?.factor_accuracy) },
          ],
          { title: "test accuracy: teacher vs factor network, per task" },
        ),
      ),
      section(
        "Training",
        Array.isArray(fs.metrics?.history) && fs.metrics.history.length
          ? metricChart(historyPoints(fs.metrics.history), {}, { xLabel: "epoch", title: "per-epoch means" })
          : h("p", { class: "empty" }, "The run recorded no training history."),
      ),
    ),
    section(
      "Evaluation",
      evalParts.length ? evalParts : h("p", { class: "empty" }, "No leakage, disentanglement or transfer results for this run (`kf evaluate` measures them)."),
    ),
    h(
      "div",
      { class: "two-col" },
      section(
        "Lineage",
        facts([
          ["teacher", h("span", {}, h("a", { href: ctx.link("teachers", lin.teacher.id) }, lin.teacher.name), ` (${lin.teacher.format})`)],
          ["teacher sha256", h("code", { class: "sha" }, lin.teacher.sha256)],
          ["dataset", h("span", {}, h("a", { href: ctx.link("datasets", lin.dataset.id) }, lin.dataset.name), ` (${lin.dataset.source})`)],
          ["dataset sha256", lin.dataset.sha256 ? h("code", { class: "sha" }, lin.dataset.sha256) : "generated (built-in)"],
          ["job", h("a", { href: ctx.link("jobs", lin.job.id) }, shortId(lin.job.id))],
          ["attempts", String(lin.job.attempts)],
          ["resumed from step", lin.job.resumed_from_step === null ? "–" : String(lin.job.resumed_from_step)],
          ["trained", `${fmtTime(lin.job.started_at)} → ${fmtTime(lin.job.finished_at)}`],
          ["registered", fmtTime(fs.created_at)],
        ]),
        h("details", {}, h("summary", {}, "data split"), json(lin.dataset.spec)),
        h("details", {}, h("summary", {}, "recipe (config)"), json(fs.config)),
      ),
      section(
        "Versions",
        table(
          ["version", "registered"],
          versions.data.map((v) => [v.id === fs.id ? `v${v.version} (this one)` : h("a", { href: ctx.link("factor-sets", v.id) }, `v${v.version}`), fmtTime(v.created_at)]),
        ),
      ),
    ),
    section(
      "Artifacts",
      h("p", { class: "hint" }, "Every file is content-addressed and checked against its sha256 before it is served."),
      facts([
        artifactRow("ckn.onnx", fs.ckn_artifact),
        ...fs.factors.map((f) => artifactRow(`task-${f.task}.onnx`, f.artifact)),
        artifactRow("manifest.json", fs.manifest_artifact),
        artifactRow("report.json", fs.report_artifact),
      ]),
      h("p", { class: "hint" }, `Input: ${fs.input_spec.name} ${JSON.stringify(fs.input_spec.shape)} ${fs.input_spec.dtype || ""}; parts total ${fmtBytes(fs.ckn_artifact.size_bytes + fs.factors.reduce((a, f) => a + f.artifact.size_bytes, 0))}.`),
    ),
  );
}

export async function render(main, ctx) {
  return ctx.id ? detail(main, ctx) : list(main, ctx);
}
