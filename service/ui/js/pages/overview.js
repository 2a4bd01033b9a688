// Overview: service health, the execution provider, cache and batch figures, and counts of everything in the
// catalog (list endpoints' `count` with limit=1, so the page costs the same with 10 or 10,000 rows).

import { api, parseMetrics } from "../api.js";
import { add, badge, fmtBytes, fmtTime, h, section, shortId, table } from "../dom.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

function tile(label, value, href, title) {
  const body = [h("div", { class: "tile-value", title }, String(value)), h("div", { class: "tile-label" }, label)];
  return href ? h("a", { class: "tile", href }, body) : h("div", { class: "tile" }, body);
}

function metric(metrics, name, labels = {}) {
  const rows = (metrics[name] || []).filter((r) => Object.entries(labels).every(([k, v]) => r.labels[k] === v));
  return rows.length ? rows.reduce((a, r) => a + r.value, 0) : null;
}

export async function render(main, ctx) {
  const count = (path, query = {}) => api(path, { query: { limit: 1, ...query }, signal: ctx.signal }).then((r) => r.count);
  const [health, metricsText, teachers, datasets, factorSets, recentJobs, ...jobCounts] = await Promise.all([
    api("/v1/health", { signal: ctx.signal }),
    api("/metrics", { signal: ctx.signal }).catch(() => ""),
    count("/v1/teachers"),
    count("/v1/datasets"),
    count("/v1/factor-sets"),
    api("/v1/jobs", { query: { limit: 5 }, signal: ctx.signal }),
    ...STATUSES.map((status) => count("/v1/jobs", { status })),
  ]);
  const m = parseMetrics(typeof metricsText === "string" ? metricsText : "");
  const hits = metric(m, "kf_assembly_cache_total", { result: "hit" }) ?? metric(m, "kf_assembly_cache", { result: "hit" });
  const misses = metric(m, "kf_assembly_cache_total", { result: "miss" }) ?? metric(m, "kf_assembly_cache", { result: "miss" });
  const batches = metric(m, "kf_batch_size_count");
  const rows = metric(m, "kf_batch_size_sum");
  const lookups = (hits || 0) + (misses || 0);

  add(main, 
    h("h1", {}, "Overview"),
    section(
      "Service",
      h(
        "div",
        { class: "tiles" },
        tile("status", health.status),
        tile("execution provider", health.provider.replace(/ExecutionProvider$/, ""), null, health.provider),
        tile("catalog", health.database),
        tile("job runner", health.jobs),
      ),
      health.provider_reason ? h("p", { class: "hint" }, `Provider: ${health.provider_reason}`) : null,
    ),
    h(
      "div",
      { class: "two-col" },
      section(
        "Catalog",
        h(
          "div",
          { class: "tiles" },
          tile("teachers", teachers, "#/teachers"),
          tile("datasets", datasets, "#/datasets"),
          tile("factor sets", factorSets, "#/factor-sets"),
        ),
      ),
      section(
        "Jobs",
        h(
          "div",
          { class: "tiles narrow" },
          STATUSES.map((status, i) => tile(status, jobCounts[i], ctx.link("jobs", null, { status }))),
        ),
      ),
    ),
    section(
      "Serving",
      h(
        "div",
        { class: "tiles" },
        tile("cached assemblies", health.cached_assemblies),
        tile("cache memory", fmtBytes(health.cache_bytes)),
        tile("cache hit rate", lookups ? `${((100 * (hits || 0)) / lookups).toFixed(0)} %` : "–"),
        tile("micro-batches run", batches ?? "–"),
        tile("rows per batch (mean)", batches ? (rows / batches).toFixed(2) : "–"),
      ),
    ),
    section(
      "Latest jobs",
      table(
        ["job", "status", "factor set", "progress", "created"],
        recentJobs.data.map((j) => [
          h("a", { href: ctx.link("jobs", j.id) }, shortId(j.id)),
          badge(j.status),
          j.factor_set_name,
          `${Math.round(100 * j.progress)} %`,
          fmtTime(j.created_at),
        ]),
        { empty: "No jobs yet." },
      ),
    ),
  );
}
