"""A resident factor set: every part loaded once per process, any task subset served by routing.

    resident = ResidentSet.load(parts, fs, providers=[CPU], threads=2, stats=PartStats())  # built, warmed
    route = resident.route(("shape", "scale"), combined=False)  # microseconds, nothing composed
    outputs = resident.run(x, [(0, len(x), route)])[0]  # logits/probs per task, in order

A batch may mix requests for different subsets: :meth:`ResidentSet.run` runs the CKN once over every row, then
each task part over exactly the rows whose request asked for that task, and scatters the outputs back; the
combined head is computed on the host from the logits, as the fused graph computes it. Every part's weights are
loaded once, from parts whose sha256 was verified (:func:`kf_core.parts.load_parts`).

On the CPU the set is one ONNX Runtime session over the routed graph (:func:`kf_core.routed_graph`: the CKN and
every task part, each part over the rows named per call), so a mixed batch is one ORT call: one release of the
GIL, however many tasks it holds. On CUDA there is one session for the CKN part (``x -> z_c``) and one per task
part (``(x, z_c) -> logits, probs``); x and z_c stay on the device between them (ORT IOBinding), rows gathered
on the device by a two-node Gather graph, so only the outputs travel back to the host.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from kf_core import COMBINED, ROWS_PREFIX, FactorParts, combined_head, ort, routed_graph
from service.serving.batching import SharedBatcher
from service.serving.providers import CUDA
from service.serving.refs import FactorSetInfo

__all__ = [
    "OutputInfo",
    "PartStats",
    "ResidentSet",
    "Route",
    "Span",
    "combined_class_names",
    "group_heads",
]

_MAX_ROUTES = 4096  # a 10-task set has 1,023 subsets, x2 with combined heads
_TASK_OUTPUTS = ["logits", "probs"]  # per task: <kind>_<task> of the routed graph, <kind> of a CUDA task part
_NO_ROWS = np.zeros(0, dtype=np.int64)
_ONE_ROW = np.zeros(1, dtype=np.int64)  # row 0: the whole of a one-row batch
_NO_ROWS.flags.writeable = _ONE_ROW.flags.writeable = False  # fed to every run: nothing may change them


@dataclass(frozen=True)
class OutputInfo:
    name: str  # logits_<task>, probs_<task>, logits_combined, ...
    task: str  # task name, or "combined"
    kind: str  # "logits" or "probs"
    class_names: list[str]


@dataclass(frozen=True, eq=False)  # one object per subset (memoized): compared and hashed by identity
class Route:
    """What one task subset of a resident factor set answers: its tasks and outputs, in order."""

    factor_set: FactorSetInfo
    tasks: tuple[str, ...]  # in the factor set's order
    combined: bool
    input_name: str
    input_shape: list[int | None]  # [None, *one sample's shape]
    outputs: list[OutputInfo]
    provider: str
    assembly_id: None = None  # served from the parts: no fused graph is involved
    _heads: list[tuple[str, OutputInfo, OutputInfo]] = field(init=False, repr=False)
    # The routed graph's outputs for this subset's tasks, in the route's order (logits, probs per task), and the
    # row inputs of a one-row batch that asks for them alone: a lone request's run needs nothing else.
    fetches: list[str] = field(init=False, repr=False)
    rows_one: dict[str, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:  # once per route, not per request
        object.__setattr__(self, "_heads", group_heads(self.outputs))
        object.__setattr__(self, "fetches", [f"{k}_{name}" for name in self.tasks for k in _TASK_OUTPUTS])
        rows = {ROWS_PREFIX + t: _ONE_ROW if t in self.tasks else _NO_ROWS for t in self.factor_set.task_names}
        object.__setattr__(self, "rows_one", rows)

    def heads(self) -> list[tuple[str, OutputInfo, OutputInfo]]:
        return self._heads


Span = tuple[int, int, Route]  # rows [start, stop) of a batch, and the route its request asked for


@dataclass
class PartStats:
    """What the parts ran (read by /metrics and the tests)."""

    ckn_runs: int = 0
    ckn_rows: int = 0
    ckn_requests: int = 0
    task_runs: dict[str, int] = field(default_factory=dict)
    task_rows: dict[str, int] = field(default_factory=dict)


class ResidentSet:
    """The sessions of one factor set on one provider; :meth:`run` is called from one inference thread."""

    def __init__(
        self,
        fs: FactorSetInfo,
        *,
        size_bytes: int,
        routed: Any = None,
        ckn: Any = None,
        tasks: dict[str, Any] | None = None,
        gather: Any = None,
    ) -> None:
        self.factor_set = fs
        self._routed = routed  # CPU: the routed graph's session (every part, rows chosen per call)
        self._ckn = ckn  # CUDA: the CKN part's session ...
        self._tasks = tasks or {}  # ... each task part's ...
        self._gather = gather  # ... and (x, z_c, rows) -> (x[rows], z_c[rows]) on the device
        self.size_bytes = size_bytes  # each part's graph counted once
        self.provider = str((routed or ckn).get_providers()[0])
        self._device = "cpu" if routed is not None else "cuda"
        self.input_name = str(fs.input_spec.get("name", "x"))
        self.input_shape: list[int | None] = [None, *(int(d) for d in fs.input_spec["shape"][1:])]
        self._routes: dict[tuple[tuple[str, ...], bool], Route] = {}
        self._lock = threading.Lock()
        self.stats = PartStats()
        self.batcher: SharedBatcher | None = None  # the runtime's queue for this set

    @classmethod
    def load(
        cls,
        parts: FactorParts,
        fs: FactorSetInfo,
        *,
        providers: list[str],
        threads: int | None,
        stats: PartStats,
        spin: bool = True,
    ) -> ResidentSet:
        """The routed graph's session (CPU) or one session per part (CUDA), ORT optimising each as it is created,
        then one warm-up batch through every part."""
        options = ort.session_options(threads, spin=spin)
        size = parts.ckn.ByteSize() + sum(parts.tasks[n].ByteSize() for n in fs.task_names)
        resident: ResidentSet | None = None
        if CUDA in providers:
            ckn = ort.create_session(parts.ckn.SerializeToString(), providers=providers, options=options)
            if str(ckn.get_providers()[0]) == CUDA:
                tasks = {
                    name: ort.create_session(
                        _with_probs(parts.tasks[name]).SerializeToString(), providers=providers, options=options
                    )
                    for name in fs.task_names
                }
                gather = ort.create_session(_gather_graph(len(fs.input_spec["shape"])), providers=providers)
                resident = cls(fs, size_bytes=size, ckn=ckn, tasks=tasks, gather=gather)
        if resident is None:  # the CPU (or CUDA asked for and not available)
            routed = ort.create_session(routed_graph(parts), providers=[ort.CPU], options=options)
            resident = cls(fs, size_bytes=size, routed=routed)
        warm = np.zeros((1, *(d or 1 for d in resident.input_shape[1:])), dtype=np.float32)
        everything = resident.route(tuple(fs.task_names), combined=False)
        resident.run(warm, [(0, 1, everything)])
        resident.stats = stats  # counted from here on: the warm-up is no client's run
        return resident

    @property
    def device(self) -> str:
        return self._device

    # ----------------------------------------------------------------- routing
    def route(self, tasks: tuple[str, ...], *, combined: bool) -> Route:
        """The route for validated task names in the factor set's order (see ``FactorSetInfo.canonical_tasks``)."""
        key = (tasks, combined)
        hit = self._routes.get(key)
        if hit is not None:
            return hit
        fs = self.factor_set
        outputs: list[OutputInfo] = []
        for name in tasks:
            labels = fs.task(name).class_names
            outputs += [
                OutputInfo(f"logits_{name}", name, "logits", labels),
                OutputInfo(f"probs_{name}", name, "probs", labels),
            ]
        if combined:
            labels = combined_class_names(fs, tasks)
            outputs += [
                OutputInfo(f"logits_{COMBINED}", COMBINED, "logits", labels),
                OutputInfo(f"probs_{COMBINED}", COMBINED, "probs", labels),
            ]
        route = Route(fs, tasks, combined, self.input_name, self.input_shape, outputs, self.provider)
        with self._lock:
            if len(self._routes) >= _MAX_ROUTES:
                self._routes.clear()
            self._routes[key] = route
        return route

    # ----------------------------------------------------------------- running (the inference thread)
    def run(self, x: np.ndarray, spans: Sequence[Span]) -> list[list[np.ndarray]]:
        """Per span, its route's outputs for its rows: the CKN once over ``x``, each task over its rows only."""
        if len(spans) == 1 and len(x) == 1 and self._routed is not None:
            return [self._run_one(x, spans[0][2])]
        wanted: dict[str, list[int]] = {}
        for i, (_, _, route) in enumerate(spans):
            for name in route.tasks:
                wanted.setdefault(name, []).append(i)
        n = len(x)
        s = self.stats
        s.ckn_runs += 1
        s.ckn_rows += n
        s.ckn_requests += len(spans)
        one_row = n == len(spans)  # batch-1 requests: span i is row i
        rows_of = {
            name: None if len(ids) == len(spans) else _rows(spans, ids, one_row=one_row) for name, ids in wanted.items()
        }
        # Per task, its logits and probabilities for the rows of the spans that asked for it, in span order.
        computed = self._run_routed(x, rows_of) if self._routed is not None else self._run_cuda(x, rows_of)
        heads: dict[str, tuple[np.ndarray, np.ndarray, dict[int, int]]] = {}
        for name, span_ids in wanted.items():
            logits, probs = computed[name]
            s.task_runs[name] = s.task_runs.get(name, 0) + 1
            s.task_rows[name] = s.task_rows.get(name, 0) + len(logits)
            if one_row:
                starts = dict(zip(span_ids, range(len(span_ids)), strict=True))
            else:
                starts, at = {}, 0
                for i in span_ids:
                    starts[i] = at
                    at += spans[i][1] - spans[i][0]
            heads[name] = (logits, probs, starts)
        return _scatter(spans, heads)

    def _run_one(self, x: np.ndarray, route: Route) -> list[np.ndarray]:
        """A batch of one row asked for by one request (a lone client's): the route's outputs as the routed graph
        gives them, with the feeds and output names the route holds ready (what :meth:`run` computes per batch,
        and scatters afterwards, costs a lone request as much as the rest of its way through the server)."""
        outputs: list[np.ndarray] = self._routed.run(route.fetches, {"x": x, **route.rows_one})
        s = self.stats
        s.ckn_runs += 1
        s.ckn_rows += 1
        s.ckn_requests += 1
        for name in route.tasks:
            s.task_runs[name] = s.task_runs.get(name, 0) + 1
            s.task_rows[name] = s.task_rows.get(name, 0) + 1
        if route.combined:
            outputs += _combined(outputs)
        return outputs

    def _run_routed(
        self, x: np.ndarray, rows_of: dict[str, np.ndarray | None]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """One call of the routed graph: every task asked for over its rows, the others over none."""
        every_row = np.arange(len(x), dtype=np.int64)  # for the tasks every request asked for
        feed = {"x": x}
        for name in self.factor_set.task_names:
            rows = rows_of.get(name, _NO_ROWS)
            feed[ROWS_PREFIX + name] = every_row if rows is None else rows
        names = list(rows_of)
        outputs = self._routed.run([f"{k}_{name}" for name in names for k in _TASK_OUTPUTS], feed)
        return {name: (outputs[2 * i], outputs[2 * i + 1]) for i, name in enumerate(names)}

    def _run_cuda(
        self, x: np.ndarray, rows_of: dict[str, np.ndarray | None]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """x uploaded once, z_c computed and kept on the device; each task part reads its rows of both there."""
        onnxruntime = ort.import_onnxruntime()
        x_dev = onnxruntime.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), "cuda", 0)
        binding = self._ckn.io_binding()
        binding.bind_ortvalue_input("x", x_dev)
        binding.bind_output("z_c", "cuda", 0)
        self._ckn.run_with_iobinding(binding)
        z_dev = binding.get_outputs()[0]
        computed = {}
        for name, rows in rows_of.items():
            xs, zs = x_dev, z_dev
            if rows is not None:
                g = self._gather.io_binding()
                g.bind_ortvalue_input("x", x_dev)
                g.bind_ortvalue_input("z_c", z_dev)
                g.bind_cpu_input("rows", rows)
                g.bind_output("x_rows", "cuda", 0)
                g.bind_output("z_rows", "cuda", 0)
                self._gather.run_with_iobinding(g)
                xs, zs = g.get_outputs()
            tb = self._tasks[name].io_binding()
            tb.bind_ortvalue_input("x", xs)
            tb.bind_ortvalue_input("z_c", zs)
            for out in _TASK_OUTPUTS:
                tb.bind_output(out, "cpu")
            self._tasks[name].run_with_iobinding(tb)
            logits, probs = tb.copy_outputs_to_cpu()
            computed[name] = (logits, probs)
        return computed


def group_heads(outputs: Sequence[OutputInfo]) -> list[tuple[str, OutputInfo, OutputInfo]]:
    """Per head (task or "combined"), in order: its logits and probability outputs."""
    by_task: dict[str, dict[str, OutputInfo]] = {}
    for o in outputs:
        by_task.setdefault(o.task, {})[o.kind] = o
    return [(t, d["logits"], d["probs"]) for t, d in by_task.items()]


def combined_class_names(fs: FactorSetInfo, tasks: Sequence[str]) -> list[str]:
    """The combined head's class names, if ``tasks`` are disjoint class subsets of one teacher output."""
    infos = [fs.task(n) for n in tasks]
    return combined_head([(t.name, t.output, t.classes, t.class_names) for t in infos]).class_names


def _with_probs(part: onnx.ModelProto) -> onnx.ModelProto:
    """A task part that also outputs ``probs`` (softmax over its logits, as the fused graph's heads compute them),
    so the session computes them off the GIL instead of numpy on the inference thread."""
    model = onnx.ModelProto()
    model.CopyFrom(part)
    model.graph.node.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="kf_probs"))
    out = model.graph.output.add()
    out.CopyFrom(part.graph.output[0])  # float32 [batch, k], like the logits
    out.name = "probs"
    return model


def _rows(spans: Sequence[Span], span_ids: list[int], *, one_row: bool) -> np.ndarray:
    if one_row:  # every span is one row: its start
        return np.array([spans[i][0] for i in span_ids], dtype=np.int64)
    return np.concatenate([np.arange(spans[i][0], spans[i][1]) for i in span_ids])


def _combined(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """The combined head's logits and probabilities from a route's outputs (logits, probs per task): the tasks'
    logits side by side and their softmax, as the fused graph's combined head computes them."""
    joined = np.concatenate(outputs[::2], axis=1)
    return [joined, _softmax(joined)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = (e / e.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)
    return out


def _scatter(
    spans: Sequence[Span], heads: dict[str, tuple[np.ndarray, np.ndarray, dict[int, int]]]
) -> list[list[np.ndarray]]:
    """Per span, its route's outputs: slices of each task's logits and probabilities (the combined head, if asked
    for, computed from the span's own logits)."""
    results = []
    for i, (start, stop, route) in enumerate(spans):
        n = stop - start
        out: list[np.ndarray] = []
        for name in route.tasks:
            logits, probs, starts = heads[name]
            at = starts[i]
            out += [logits[at : at + n], probs[at : at + n]]
        if route.combined:
            out += _combined(out)
        results.append(out)
    return results


def _gather_graph(rank: int) -> bytes:
    """(x, z_c, rows) -> (x[rows], z_c[rows]): row gathering on the device, between the CKN and a task part."""
    x_dims: list[str | int] = ["batch", *(f"d{i}" for i in range(1, rank))]
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["x", "rows"], ["x_rows"], axis=0),
            helper.make_node("Gather", ["z_c", "rows"], ["z_rows"], axis=0),
        ],
        "kf_gather_rows",
        [
            helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_dims),
            helper.make_tensor_value_info("z_c", onnx.TensorProto.FLOAT, ["batch", "d"]),
            helper.make_tensor_value_info("rows", onnx.TensorProto.INT64, ["n"]),
        ],
        [
            helper.make_tensor_value_info("x_rows", onnx.TensorProto.FLOAT, ["n", *x_dims[1:]]),
            helper.make_tensor_value_info("z_rows", onnx.TensorProto.FLOAT, ["n", "d"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data
