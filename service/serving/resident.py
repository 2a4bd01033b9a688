"""A resident factor set: every part loaded once per process, any task subset served by routing.

    resident = ResidentSet.load(parts, fs, provider=provider, threads=2)   # sessions built, verified, warmed
    route = resident.route(("shape", "scale"), combined=False)            # microseconds, nothing composed
    outputs = resident.run(x, [(0, len(x), route)])[0]                    # logits/probs per task, in order

One ONNX Runtime session for the CKN part (``x -> z_c``) and one per task part (``(x, z_c) -> logits``), each
created once from parts whose sha256 was verified (:func:`kf_core.parts.load_parts`). A batch may mix requests
for different subsets: :meth:`ResidentSet.run` runs the CKN once over every row, then each task part over exactly
the rows whose request asked for that task (x and z_c gathered by row), and scatters the logits back; softmax
and the combined head are computed on the host from the logits, as the fused graph computes them.

On CUDA, x and z_c stay on the device between the CKN and the task parts (ORT IOBinding); rows are gathered on
the device by a two-node Gather graph, so only the logits travel back to the host.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from kf_core import COMBINED, FactorParts, combined_head, ort
from service.serving.batching import SharedBatcher
from service.serving.lanes import TaskPool, balance
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
_WINDOW = 256  # requests per look at which subset dominates
_TASK_THREADS = 1  # intra-op threads of each task part (see ResidentSet.load)
_TASK_OUTPUTS = ["logits", "probs"]  # what a task part's session answers (see _with_probs)
_DOMINANT = 0.8  # share of a window's requests that makes a subset worth a fused session of its own


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "_heads", group_heads(self.outputs))  # once per route, not per request

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
    fused_runs: int = 0  # batches answered by the dominant subset's fused session instead of the parts
    fused_rows: int = 0
    promotions: int = 0  # dominant subsets given a fused session


class ResidentSet:
    """The sessions of one factor set on one provider; :meth:`run` is called from one inference thread."""

    def __init__(
        self,
        fs: FactorSetInfo,
        ckn: Any,
        tasks: dict[str, Any],
        *,
        size_bytes: int,
        device: str,
        gather: Any,
        task_pool: TaskPool | None = None,
    ) -> None:
        self.factor_set = fs
        self._ckn = ckn
        self._tasks = tasks
        self._task_pool = task_pool  # CPU: the batch's task parts run side by side on it (None: one after another)
        self.size_bytes = size_bytes  # each part's graph counted once
        self.provider = str(ckn.get_providers()[0])
        self._device = device
        self._gather = gather  # CUDA only: (x, z_c, rows) -> (x[rows], z_c[rows]) on the device
        self.input_name = str(fs.input_spec.get("name", "x"))
        self.input_shape: list[int | None] = [None, *(int(d) for d in fs.input_spec["shape"][1:])]
        self._routes: dict[tuple[tuple[str, ...], bool], Route] = {}
        self._lock = threading.Lock()
        self.stats = PartStats()
        self.batcher: SharedBatcher | None = None  # the runtime's queue for this set
        # The dominant subset: when one route asks for most requests, a fused session for it (built off the request
        # path by ``promote``) answers the batches that hold only that route. At most one per factor set.
        self.promote: Callable[[Route], None] | None = None
        self.fused: tuple[Route, Any] | None = None
        self._promoting = False
        self._recent: Counter[Route] = Counter()

    @classmethod
    def load(
        cls,
        parts: FactorParts,
        fs: FactorSetInfo,
        *,
        providers: list[str],
        threads: int | None,
        stats: PartStats,
        task_pool: TaskPool | None = None,
    ) -> ResidentSet:
        """Sessions for every part (ORT optimises each as it is created), then one warm-up batch through all.

        ``task_pool`` (CPU): where a batch's task parts run side by side, one thread each
        (:mod:`service.serving.lanes`).
        """

        def session(model: onnx.ModelProto, threads: int | None) -> Any:
            return ort.create_session(
                model.SerializeToString(), providers=providers, options=ort.session_options(threads)
            )

        ckn = session(parts.ckn, threads)
        # Task parts run one intra-op thread each, side by side on ``task_pool``: a mixed batch runs each of them
        # over a few rows, where splitting one part's work between threads costs more than it saves (dsprites5,
        # 2 cores, batches of 16 uniform subsets: 12 % more CPU per row than the fused graph with the parts on 2
        # threads, the same CPU with one), while running different parts at once keeps every core busy.
        tasks = {name: session(_with_probs(parts.tasks[name]), _TASK_THREADS) for name in fs.task_names}
        size = parts.ckn.ByteSize() + sum(parts.tasks[n].ByteSize() for n in fs.task_names)
        on_cuda = str(ckn.get_providers()[0]) == CUDA
        rank = len(fs.input_spec["shape"])
        gather = ort.create_session(_gather_graph(rank), providers=providers) if on_cuda else None
        resident = cls(
            fs,
            ckn,
            tasks,
            size_bytes=size,
            device="cuda" if on_cuda else "cpu",
            gather=gather,
            task_pool=None if on_cuda else task_pool,
        )
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
        self._watch(spans)
        fused = self.fused
        if fused is not None and all(route is fused[0] for _, _, route in spans):
            return self._run_fused(fused[0], fused[1], x, spans)
        wanted: dict[str, list[int]] = {}
        for i, (_, _, route) in enumerate(spans):
            for name in route.tasks:
                wanted.setdefault(name, []).append(i)
        n = len(x)
        s = self.stats
        s.ckn_runs += 1
        s.ckn_rows += n
        s.ckn_requests += len(spans)
        if self._device == "cuda":
            run_tasks = self._cuda_runner(x)
        else:
            z_c = self._ckn.run(["z_c"], {"x": x})[0]

            def run_tasks(name: str, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
                feed = {"x": x, "z_c": z_c} if rows is None else {"x": x[rows], "z_c": z_c[rows]}
                logits, probs = self._tasks[name].run(_TASK_OUTPUTS, feed)
                return logits, probs

        # Per task, its logits and probabilities for the rows of the spans that asked for it (softmax in the part's
        # session, once per task over all those rows), and where each such span's rows start in them.
        one_row = n == len(spans)  # batch-1 requests: span i is row i
        rows_of = {
            name: None if len(ids) == len(spans) else _rows(spans, ids, one_row=one_row) for name, ids in wanted.items()
        }
        computed: dict[str, tuple[np.ndarray, np.ndarray]] = {}

        def run_group(names: list[str]) -> None:
            for name in names:
                computed[name] = run_tasks(name, rows_of[name])

        pool = self._task_pool
        if pool is not None and pool.executor is not None and len(wanted) > 1:
            # ORT releases the GIL, so the parts share the cores: one group of parts per lane, balanced by rows (a
            # part's cost grows with its rows). The calling thread runs the first group itself, so a batch costs one
            # hand-over per extra lane, not one per part (dsprites5, 16-row uniform batches: Python overhead per row
            # 13.7 -> 6.7 us, softmax moved into the parts' sessions included).
            groups = balance({name: n if rows is None else len(rows) for name, rows in rows_of.items()}, pool.lanes)
            futures = [pool.executor.submit(run_group, g) for g in groups[1:]]
            run_group(groups[0])
            for f in futures:
                f.result()
        else:
            run_group(list(wanted))
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

    def _watch(self, spans: Sequence[Span]) -> None:
        """Count requests per route; once per window, offer a route that holds most of them for promotion."""
        if self.promote is None or self._promoting or self.fused is not None:
            return
        self._recent.update(route for _, _, route in spans)
        total = self._recent.total()
        if total < _WINDOW:
            return
        route, count = self._recent.most_common(1)[0]
        self._recent.clear()
        if count >= _DOMINANT * total:
            self._promoting = True
            self.promote(route)

    def set_fused(self, route: Route, session: Any, *, size_bytes: int) -> None:
        """Install the dominant route's fused session (from the building thread); the next batch uses it."""
        self.fused = (route, session)
        self.size_bytes += size_bytes
        self.stats.promotions += 1

    def _run_fused(self, route: Route, session: Any, x: np.ndarray, spans: Sequence[Span]) -> list[list[np.ndarray]]:
        outputs = session.run([o.name for o in route.outputs], {self.input_name: x})
        self.stats.fused_runs += 1
        self.stats.fused_rows += len(x)
        return [[o[a:b] for o in outputs] for a, b, _ in spans]

    def _cuda_runner(self, x: np.ndarray) -> Any:
        """x uploaded once, z_c computed and kept on the device; task parts read both there."""
        onnxruntime = ort.import_onnxruntime()
        x_dev = onnxruntime.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), "cuda", 0)
        binding = self._ckn.io_binding()
        binding.bind_ortvalue_input("x", x_dev)
        binding.bind_output("z_c", "cuda", 0)
        self._ckn.run_with_iobinding(binding)
        z_dev = binding.get_outputs()[0]

        def run_tasks(name: str, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
            xs, zs = x_dev, z_dev
            if rows is not None:
                g = self._gather.io_binding()
                g.bind_ortvalue_input("x", x_dev)
                g.bind_ortvalue_input("z_c", z_dev)
                g.bind_cpu_input("rows", rows.astype(np.int64))
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
            return logits, probs

        return run_tasks


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
            joined = np.concatenate(out[::2], axis=1)
            out += [joined, _softmax(joined)]
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
