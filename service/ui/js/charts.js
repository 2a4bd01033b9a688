// Small SVG charts built with the DOM API (no library, no innerHTML): a line chart for training curves, grouped
// bars for teacher vs factor accuracy, and a heatmap table for the leakage matrix.

import { fill, h, s } from "./dom.js";

const COLORS = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#7c3aed", "#0891b2", "#ca8a04", "#db2777"];

function ticks(lo, hi, n = 4) {
  if (!(hi > lo)) return [lo];
  return Array.from({ length: n + 1 }, (_, i) => lo + ((hi - lo) * i) / n);
}

function fmt(v) {
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.01 || a >= 10000)) return v.toExponential(1);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function legend(names) {
  return h(
    "div",
    { class: "legend" },
    names.map((name, i) => {
      const sw = h("span", { class: "swatch" });
      sw.style.background = COLORS[i % COLORS.length];
      return h("span", { class: "legend-item" }, sw, name);
    }),
  );
}

/** series: [{name, points: [[x, y], ...]}]. */
export function lineChart(series, { width = 560, height = 240, xLabel = "", yLabel = "", title = "" } = {}) {
  const pts = series.flatMap((x) => x.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const wrap = h("figure", { class: "chart" });
  if (title) wrap.append(h("figcaption", {}, title));
  if (!pts.length) {
    wrap.append(h("p", { class: "empty" }, "No points yet."));
    return wrap;
  }
  const m = { l: 52, r: 12, t: 10, b: 34 };
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const pad = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - pad, y1 + pad];
  const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (width - m.l - m.r);
  const Y = (y) => height - m.b - ((y - y0) / (y1 - y0)) * (height - m.t - m.b);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img", "aria-label": title || yLabel });
  for (const t of ticks(y0, y1)) {
    svg.append(s("line", { x1: m.l, x2: width - m.r, y1: Y(t), y2: Y(t), class: "gridline" }));
    svg.append(s("text", { x: m.l - 6, y: Y(t) + 4, class: "tick", "text-anchor": "end" }, fmt(t)));
  }
  const integral = pts.every(([x]) => Number.isInteger(x));
  const step = Math.max(1, Math.ceil((x1 - x0) / 6));
  const xTicks = integral ? Array.from({ length: Math.floor((x1 - x0) / step) + 1 }, (_, i) => x0 + i * step) : ticks(x0, x1);
  for (const t of xTicks) {
    svg.append(s("text", { x: X(t), y: height - m.b + 16, class: "tick", "text-anchor": "middle" }, fmt(t)));
  }
  svg.append(s("text", { x: (m.l + width - m.r) / 2, y: height - 4, class: "axis-label", "text-anchor": "middle" }, xLabel));
  series.forEach((ser, i) => {
    const good = ser.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (!good.length) return;
    const d = good.map(([x, y], j) => `${j ? "L" : "M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join("");
    svg.append(s("path", { d, class: "series", stroke: COLORS[i % COLORS.length] }));
    if (good.length < 40) {
      for (const [x, y] of good) svg.append(s("circle", { cx: X(x), cy: Y(y), r: 2.5, fill: COLORS[i % COLORS.length] }));
    }
  });
  wrap.append(svg, legend(series.map((x) => x.name)));
  if (yLabel) wrap.append(h("div", { class: "axis-note" }, yLabel));
  return wrap;
}

/** Grouped bars in [0, 1]: categories on x, one bar per series in each group. */
export function groupedBars(categories, series, { width = 560, height = 240, title = "" } = {}) {
  const wrap = h("figure", { class: "chart" });
  if (title) wrap.append(h("figcaption", {}, title));
  const m = { l: 44, r: 10, t: 10, b: 40 };
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img", "aria-label": title });
  const Y = (v) => height - m.b - v * (height - m.t - m.b);
  for (const t of ticks(0, 1)) {
    svg.append(s("line", { x1: m.l, x2: width - m.r, y1: Y(t), y2: Y(t), class: "gridline" }));
    svg.append(s("text", { x: m.l - 6, y: Y(t) + 4, class: "tick", "text-anchor": "end" }, `${Math.round(100 * t)}%`));
  }
  const group = (width - m.l - m.r) / Math.max(1, categories.length);
  const barW = Math.min(36, (group * 0.8) / Math.max(1, series.length));
  categories.forEach((cat, ci) => {
    const gx = m.l + ci * group + (group - barW * series.length) / 2;
    series.forEach((ser, si) => {
      const v = Math.max(0, Math.min(1, Number(ser.values[ci]) || 0));
      const rect = s("rect", { x: gx + si * barW, y: Y(v), width: barW - 2, height: Y(0) - Y(v), fill: COLORS[si % COLORS.length] });
      rect.append(s("title", {}, `${cat} · ${ser.name}: ${(100 * v).toFixed(1)} %`));
      svg.append(rect);
    });
    const label = cat.length > 14 ? `${cat.slice(0, 13)}…` : cat;
    svg.append(s("text", { x: m.l + ci * group + group / 2, y: height - m.b + 16, class: "tick", "text-anchor": "middle" }, label));
  });
  wrap.append(svg, legend(series.map((x) => x.name)));
  return wrap;
}

/** A matrix as a table whose cells are shaded by value in [0, 1] (rows: representations, columns: tasks). */
export function heatmap(rows, cols, matrix, { title = "", rowHead = "", colHead = "" } = {}) {
  const head = h("tr", {}, h("th", {}, `${rowHead} \\ ${colHead}`), cols.map((c) => h("th", {}, c)));
  const body = rows.map((r, i) =>
    h(
      "tr",
      {},
      h("th", {}, r),
      cols.map((_, j) => {
        const v = Number(matrix[i]?.[j]);
        const cell = h("td", { class: "heat" }, Number.isFinite(v) ? v.toFixed(2) : "–");
        if (Number.isFinite(v)) {
          const a = Math.max(0, Math.min(1, v));
          cell.style.background = `rgba(37, 99, 235, ${(0.08 + 0.8 * a).toFixed(3)})`;
          cell.style.color = a > 0.55 ? "#fff" : "";
        }
        return cell;
      }),
    ),
  );
  return h(
    "figure",
    { class: "chart" },
    title ? h("figcaption", {}, title) : null,
    h("table", { class: "heatmap" }, h("thead", {}, head), h("tbody", {}, body)),
  );
}

/** Metric names grouped for plotting: un-prefixed ones ("loss", "loss_infomax") together, and "task/term"
 * names by term, one line per task (the terms have different scales, so one chart each). */
export function metricGroups(keys) {
  const groups = new Map();
  for (const k of keys) {
    const cut = k.indexOf("/");
    const group = cut < 0 ? "totals" : k.slice(cut + 1);
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(k);
  }
  return groups;
}

/** A line chart of `points` ({metric: [[x, y]]}) with a picker of the metric group; `state.group` keeps the
 * choice across redraws (live jobs redraw on every event). */
export function metricChart(points, state, { xLabel = "", title = "" } = {}) {
  const groups = metricGroups(Object.keys(points));
  if (!groups.has(state.group)) state.group = groups.keys().next().value;
  const label = (g) => (g === "totals" ? "total loss and InfoMax term" : `${g}, per task`);
  const select = h(
    "select",
    { class: "chart-select", "aria-label": "metrics to plot" },
    [...groups.keys()].map((g) => h("option", { value: g, selected: g === state.group }, label(g))),
  );
  const holder = h("div");
  const draw = () =>
    fill(holder, lineChart((groups.get(state.group) || []).map((k) => ({ name: k, points: points[k] })), { xLabel, title }));
  select.addEventListener("change", () => {
    state.group = select.value;
    draw();
  });
  draw();
  return h("div", { class: "metric-chart" }, groups.size > 1 ? h("label", { class: "chart-pick" }, "Plot ", select) : null, holder);
}

/** Per-epoch history rows ([{epoch, metric: value}]) as {metric: [[epoch, value]]}. */
export function historyPoints(history) {
  const out = {};
  for (const row of history) {
    for (const [k, v] of Object.entries(row)) if (k !== "epoch") (out[k] ||= []).push([row.epoch, Number(v)]);
  }
  return out;
}
