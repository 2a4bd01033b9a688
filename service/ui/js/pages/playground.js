// Playground: pick a factor set, tick any tasks, give an input (a held-out sample of the factor set's dataset, a
// drawing, an image or a .npy file), and see each task's label and probabilities from POST /v1/predict, with the
// latency; download the fused ONNX graph of exactly those tasks; copy the same request as curl or tritonclient.

import { api, download } from "../api.js";
import { add, clear, errorBox, fill, h, section, snippet, toast } from "../dom.js";

const VIEW = 224; // preview and drawing canvases, in CSS pixels

function b64(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; i += 0x8000) out += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(out);
}

/** Nested lists [1][C][H][W] from a flat Float32Array in C,H,W order. */
function nested(flat, [c, hh, w]) {
  const out = [];
  for (let k = 0; k < c; k += 1) {
    const plane = [];
    for (let i = 0; i < hh; i += 1) plane.push(Array.from(flat.subarray((k * hh + i) * w, (k * hh + i + 1) * w)));
    out.push(plane);
  }
  return [out];
}

function flatten(sample) {
  return Float32Array.from(sample.flat(Infinity));
}

/** Paint a C,H,W array (first channel, or RGB when C = 3) onto a canvas, scaled to its size. */
function paint(canvas, flat, [c, hh, w], [lo, hi]) {
  const small = document.createElement("canvas");
  small.width = w;
  small.height = hh;
  const g = small.getContext("2d");
  const img = g.createImageData(w, hh);
  const span = hi > lo ? hi - lo : 1;
  for (let i = 0; i < hh * w; i += 1) {
    const v = (k) => Math.round((255 * (flat[k * hh * w + i] - lo)) / span);
    img.data[4 * i] = v(0);
    img.data[4 * i + 1] = c === 3 ? v(1) : v(0);
    img.data[4 * i + 2] = c === 3 ? v(2) : v(0);
    img.data[4 * i + 3] = 255;
  }
  g.putImageData(img, 0, 0);
  const ctx2 = canvas.getContext("2d");
  ctx2.imageSmoothingEnabled = false;
  ctx2.clearRect(0, 0, canvas.width, canvas.height);
  ctx2.drawImage(small, 0, 0, canvas.width, canvas.height);
}

/** Any drawable (canvas, image) resized to W x H, as C,H,W values mapped from [0, 1] to the data's range. */
function fromDrawable(source, [c, hh, w], [lo, hi], { invert = false } = {}) {
  const small = document.createElement("canvas");
  small.width = w;
  small.height = hh;
  const g = small.getContext("2d");
  g.fillStyle = invert ? "#fff" : "#000";
  g.fillRect(0, 0, w, hh);
  g.drawImage(source, 0, 0, w, hh);
  const px = g.getImageData(0, 0, w, hh).data;
  const flat = new Float32Array(c * hh * w);
  for (let i = 0; i < hh * w; i += 1) {
    const rgb = [px[4 * i], px[4 * i + 1], px[4 * i + 2]].map((v) => (invert ? 255 - v : v) / 255);
    for (let k = 0; k < c; k += 1) {
      const v = c === 3 ? rgb[k] : (rgb[0] + rgb[1] + rgb[2]) / 3;
      flat[k * hh * w + i] = lo + v * (hi - lo);
    }
  }
  return flat;
}

function probabilityBars(pred, classNames, truth) {
  const order = pred.probabilities[0].map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 5);
  return h(
    "div",
    { class: "probs" },
    order.map(([p, i]) => {
      const fill = h("div", { class: "prob-fill" });
      fill.style.width = `${(100 * p).toFixed(1)}%`;
      const name = classNames[i] ?? String(i);
      return h(
        "div",
        { class: ["prob-row", i === pred.labels[0] ? "best" : "", truth === i ? "truth" : ""] },
        h("span", { class: "prob-name" }, name),
        h("div", { class: "prob-bar" }, fill),
        h("span", { class: "prob-value" }, `${(100 * p).toFixed(1)} %`),
      );
    }),
  );
}

export async function render(main, ctx) {
  const sets = await api("/v1/factor-sets", { query: { limit: 200 }, signal: ctx.signal });
  add(main, h("h1", {}, "Playground"));
  if (!sets.data.length) {
    add(main, errorBox("No factor sets yet: run a job first (Jobs → New job)."));
    return;
  }
  const wanted = ctx.params.get("fs");
  const picker = h(
    "select",
    { id: "pg-factor-set" },
    sets.data.map((fs) => h("option", { value: fs.id, selected: fs.id === wanted }, `${fs.name}:${fs.version} (${fs.factors.length} tasks)`)),
  );
  if (wanted && !sets.data.some((fs) => fs.id === wanted)) {
    // An older factor set than the 200 newest: fetch it and offer it too.
    const fs = await api(`/v1/factor-sets/${encodeURIComponent(wanted)}`, { signal: ctx.signal });
    picker.prepend(h("option", { value: fs.id, selected: true }, `${fs.name}:${fs.version} (${fs.factors.length} tasks)`));
  }
  const body = h("div", { id: "pg-body" });
  picker.addEventListener("change", () => ctx.go(ctx.link("playground", null, { fs: picker.value })));
  add(main, section("Factor set", h("label", { class: "inline" }, "Factor set ", picker)), body);
  await workbench(body, ctx, await api(`/v1/factor-sets/${picker.value}`, { signal: ctx.signal }));
}

async function workbench(root, ctx, fs) {
  const [, c, hh, w] = fs.input_spec.shape.map((d) => (d === null ? -1 : d));
  const shape = [c, hh, w];
  const state = { flat: null, npy: null, truth: null, range: [0, 1], sampleIndex: 0, count: null, source: "" };

  // Tasks.
  const boxes = fs.factors.map((f, i) =>
    h("label", { class: "check" }, h("input", { type: "checkbox", value: f.task, checked: i < 2, name: "task" }), ` ${f.task}`, h("span", { class: "hint" }, ` ${f.classes.length} classes`)),
  );
  const tasks = () => boxes.map((b) => b.querySelector("input")).filter((x) => x.checked).map((x) => x.value);

  // Input: preview and the four ways to give one.
  const preview = h("canvas", { width: VIEW, height: VIEW, class: "preview", id: "pg-preview", "aria-label": "input preview" });
  const inputNote = h("p", { class: "hint", id: "pg-input-note" }, "No input yet.");
  const show = (note) => {
    inputNote.textContent = note;
    if (state.flat) paint(preview, state.flat, shape, state.range);
    else preview.getContext("2d").clearRect(0, 0, VIEW, VIEW);
    updateSnippets();
  };

  const sampleBtn = h("button", { type: "button", id: "pg-sample" }, "Next sample");
  const randomBtn = h("button", { type: "button", id: "pg-random" }, "Random sample");
  const loadSample = async (index) => {
    const res = await api(`/v1/factor-sets/${fs.id}/samples`, { query: { offset: index, limit: 1 }, signal: ctx.signal });
    state.count = res.count;
    state.sampleIndex = res.offset;
    state.range = res.value_range;
    state.flat = flatten(res.inputs[0]);
    state.npy = null;
    state.truth = Object.fromEntries(Object.entries(res.labels).map(([k, v]) => [k, v[0]]));
    state.source = `sample ${res.offset}`;
    show(`Held-out sample ${res.offset} of ${res.count} (${res.split} split of ${res.dataset}).`);
  };
  sampleBtn.addEventListener("click", () => loadSample(state.count ? (state.sampleIndex + 1) % state.count : 0).catch((e) => toast(e.message)));
  randomBtn.addEventListener("click", () => loadSample(Math.floor(Math.random() * (state.count || 1))).catch((e) => toast(e.message)));

  // Drawing: white ink on black, like the built-in datasets.
  const pad = h("canvas", { width: VIEW, height: VIEW, class: "pad", id: "pg-pad", "aria-label": "drawing pad" });
  const pen = pad.getContext("2d");
  const wipe = () => {
    pen.fillStyle = "#000";
    pen.fillRect(0, 0, VIEW, VIEW);
  };
  wipe();
  let drawing = false;
  const at = (ev) => {
    const r = pad.getBoundingClientRect();
    return [((ev.clientX - r.left) * VIEW) / r.width, ((ev.clientY - r.top) * VIEW) / r.height];
  };
  pad.addEventListener("pointerdown", (ev) => {
    drawing = true;
    pad.setPointerCapture(ev.pointerId);
    pen.beginPath();
    pen.moveTo(...at(ev));
  });
  pad.addEventListener("pointermove", (ev) => {
    if (!drawing) return;
    pen.lineTo(...at(ev));
    pen.strokeStyle = "#fff";
    pen.lineWidth = VIEW / Math.max(6, Math.min(hh, w) / 1.5);
    pen.lineCap = "round";
    pen.lineJoin = "round";
    pen.stroke();
  });
  const endStroke = () => {
    if (!drawing) return;
    drawing = false;
    state.flat = fromDrawable(pad, shape, state.range);
    state.npy = null;
    state.truth = null;
    state.source = "drawing";
    show("Your drawing, resized to the model's input.");
  };
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointerleave", endStroke);
  const wipeBtn = h("button", { type: "button" }, "Clear");
  wipeBtn.addEventListener("click", wipe);

  const imageIn = h("input", { type: "file", accept: "image/*", id: "pg-image" });
  const invert = h("input", { type: "checkbox", id: "pg-invert" });
  imageIn.addEventListener("change", async () => {
    const file = imageIn.files[0];
    if (!file) return;
    try {
      const bitmap = await createImageBitmap(file);
      state.flat = fromDrawable(bitmap, shape, state.range, { invert: invert.checked });
      state.npy = null;
      state.truth = null;
      state.source = file.name;
      show(`Image ${file.name} (${bitmap.width}×${bitmap.height}) resized to ${w}×${hh}.`);
    } catch {
      toast("The browser could not read that file as an image.");
    }
  });
  const npyIn = h("input", { type: "file", accept: ".npy", id: "pg-npy" });
  npyIn.addEventListener("change", async () => {
    const file = npyIn.files[0];
    if (!file) return;
    state.npy = b64(new Uint8Array(await file.arrayBuffer()));
    state.flat = null;
    state.truth = null;
    state.source = file.name;
    show(`${file.name}: sent as a base64 .npy batch of shape (N, ${shape.join(", ")}); the API checks its shape.`);
  });

  const otherInputs = h(
    "div",
    { class: "input-ways" },
    c === 1 || c === 3 ? h("div", { class: "way" }, h("h3", {}, "Draw"), pad, h("div", { class: "actions" }, wipeBtn)) : null,
    c === 1 || c === 3
      ? h("div", { class: "way" }, h("h3", {}, "An image"), imageIn, h("label", { class: "check" }, invert, " dark ink on light paper"))
      : null,
    h("div", { class: "way" }, h("h3", {}, "A .npy file"), npyIn, h("p", { class: "hint" }, `float32, shape (N, ${shape.join(", ")}); a batch shows its first sample's results.`)),
  );

  // Results.
  const results = h("div", { id: "pg-results" });
  const latency = h("span", { id: "pg-latency", class: "latency" });
  const runBtn = h("button", { type: "button", class: "primary", id: "pg-run" }, "Predict");
  const onnxBtn = h("button", { type: "button", id: "pg-onnx" }, "Download fused ONNX");
  const payload = () => {
    if (state.npy) return state.npy;
    if (state.flat) return nested(state.flat, shape);
    return null;
  };
  runBtn.addEventListener("click", async () => {
    const chosen = tasks();
    const x = payload();
    clear(results);
    if (!chosen.length) return add(results, errorBox("Tick at least one task."));
    if (!x) return add(results, errorBox("Give an input first: a sample, a drawing, an image or a .npy file."));
    runBtn.disabled = true;
    const t0 = performance.now();
    try {
      const res = await api("/v1/predict", { method: "POST", json: { factor_set: fs.id, tasks: chosen, inputs: x } });
      const ms = performance.now() - t0;
      latency.textContent = `${ms.toFixed(1)} ms round trip · ${res.provider}`;
      for (const task of res.tasks) {
        const pred = res.predictions[task];
        const factor = fs.factors.find((f) => f.task === task);
        const truth = state.truth?.[task];
        add(results, 
          h(
            "div",
            { class: "task-result", dataset: { task } },
            h("h3", {}, task, ": ", h("span", { class: "label", dataset: { label: String(pred.labels[0]) } }, pred.class_names[0])),
            truth !== undefined && truth !== null ? h("p", { class: "hint" }, `truth: ${factor?.class_names[truth] ?? truth}`) : null,
            probabilityBars(pred, factor?.class_names || [], truth),
            pred.labels.length > 1 ? h("p", { class: "hint" }, `batch of ${pred.labels.length}; first sample shown`) : null,
          ),
        );
      }
    } catch (err) {
      add(results, errorBox(err.message));
    } finally {
      runBtn.disabled = false;
    }
  });
  onnxBtn.addEventListener("click", async () => {
    const chosen = tasks();
    if (!chosen.length) return toast("Tick at least one task.");
    onnxBtn.disabled = true;
    try {
      const a = await api("/v1/assemblies", { method: "POST", json: { factor_set: fs.id, tasks: chosen } });
      await download(a.onnx_url, `${fs.name}-v${fs.version}-${a.tasks.join("+")}.onnx`);
      toast(`Downloaded ${a.tasks.join(" + ")}: ${(a.size_bytes / 1e6).toFixed(2)} MB, sha256 ${a.graph_sha256.slice(0, 12)}…`);
    } catch (err) {
      toast(err.message);
    } finally {
      onnxBtn.disabled = false;
    }
  });

  // Snippets for the same request (the key is read from an environment variable, never pasted in).
  const snippets = h("div", { id: "pg-snippets" });
  const updateSnippets = () => {
    const chosen = tasks();
    const base = location.origin;
    const ref = `${fs.name}:${fs.version}`;
    const curl = [
      `# input.npy: float32, shape (N, ${shape.join(", ")})`,
      `curl -s ${base}/v1/predict \\`,
      `  -H "Authorization: Bearer $KF_API_KEY" -H "Content-Type: application/json" \\`,
      `  -d "{\\"factor_set\\": \\"${ref}\\", \\"tasks\\": ${JSON.stringify(chosen).replace(/"/g, '\\"')}, \\"inputs\\": \\"$(base64 -w0 input.npy)\\"}"`,
      "",
      `# the fused graph of these tasks, for offline or edge use`,
      `curl -s ${base}/v1/assemblies -H "Authorization: Bearer $KF_API_KEY" -H "Content-Type: application/json" \\`,
      `  -d '${JSON.stringify({ factor_set: ref, tasks: chosen })}'   # then GET its onnx_url`,
    ].join("\n");
    const py = [
      "import os",
      "import numpy as np",
      "import tritonclient.http as httpclient",
      "",
      `client = httpclient.InferenceServerClient("${location.host}")`,
      `x = np.load("input.npy").astype(np.float32)  # shape (N, ${shape.join(", ")})`,
      `inp = httpclient.InferInput("${fs.input_spec.name}", list(x.shape), "FP32")`,
      "inp.set_data_from_numpy(x)",
      `outputs = [httpclient.InferRequestedOutput(name) for name in ${JSON.stringify(chosen.flatMap((t) => [`label_${t}`, `probs_${t}`])).replace(/"/g, "'")}]`,
      "result = client.infer(",
      `    "${fs.name}", [inp], model_version="${fs.version}", outputs=outputs,`,
      '    headers={"Authorization": "Bearer " + os.environ["KF_API_KEY"]},',
      ")",
      ...chosen.map((t) => `print("${t}", result.as_numpy("label_${t}"))`),
    ].join("\n");
    fill(snippets, snippet("curl (JSON API)", curl), snippet("Python, tritonclient (Open Inference Protocol v2)", py));
  };
  for (const b of boxes) b.querySelector("input").addEventListener("change", updateSnippets);

  fill(
    root,
    h(
      "div",
      { class: "pg-grid" },
      section(
        "Input",
        preview,
        inputNote,
        h("div", { class: "actions" }, sampleBtn, randomBtn),
      ),
      section(
        "Tasks and predictions",
        h("div", { class: "checks", id: "pg-tasks" }, boxes),
        h("p", { class: "hint" }, "Any subset is assembled on the fly: the shared CKN runs once, each ticked task adds its small part."),
        h("div", { class: "actions" }, runBtn, onnxBtn, latency),
        results,
      ),
    ),
    section("Other inputs", otherInputs),
    section("The same request from code", snippets),
  );
  updateSnippets();
  await loadSample(0).catch(() => show("No sample available for this dataset; draw or upload an input."));
}
