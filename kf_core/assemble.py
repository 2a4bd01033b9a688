"""Assemble any subset of a factor set's tasks into one ONNX graph, without torch.

The graph has one input ``x``; it runs the common-knowledge network once and feeds its ``z_c`` to every chosen
task branch. Branch names are prefixed ``<task>/`` (the CKN's ``_ckn/``; task names start with a letter) so
nothing collides. Outputs are ``logits_<task>`` and, by default, ``probs_<task>`` (softmax over the task's
classes). For tasks that are disjoint class subsets of one teacher output, ``combined=True`` adds
``logits_combined`` and ``probs_combined``: one softmax over the union of their classes.

Two products, one composition: :func:`assemble` gives the portable graph (weights inline, standard ONNX), for
storing; :func:`assemble_session` gives a ready ONNX Runtime session, built for speed from parts that ORT
optimised once, their weights kept as ready OrtValues (see :mod:`kf_core.ort`). Both are checked with
``onnx.checker`` every time. This module must not import torch; a test checks that in a fresh interpreter.

For serving many subsets at once, :func:`routed_graph` composes every task of the set into one graph whose task
branches each run over the rows of the batch that a call names (``rows_<task>``): one batch mixing requests for
different subsets is one ONNX Runtime call, the CKN run once over every row.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from kf_core import ort
from kf_core.errors import ModelFileError
from kf_core.parts import FactorParts, load_parts, read_onnx
from kf_core.tasks import COMBINED, check_task_names, combined_head

__all__ = [
    "COMBINED",
    "ROWS_PREFIX",
    "FactorParts",
    "assemble",
    "assemble_bytes",
    "assemble_session",
    "assemble_to_file",
    "load_parts",
    "read_onnx",  # used by kf_core.teacher and kf_core.predict
    "routed_graph",
]

ASSEMBLY_FORMAT = "kf-assembly/1"  # the JSON description under metadata_props["kf_assembly"]
_SHARED = frozenset({"x", "z_c"})  # tensors every part shares; never renamed
_CKN = "_ckn/"
ROWS_PREFIX = "rows_"  # routed graph: input ``rows_<task>``, the batch rows that task runs over


def assemble(
    parts: FactorParts, tasks: Sequence[str], *, combined: bool = False, probabilities: bool = True
) -> onnx.ModelProto:
    """One checked, self-contained ONNX graph computing the CKN once and every task in ``tasks`` (in order)."""
    return _portable(parts, tasks, combined, probabilities)[0]


def assemble_bytes(
    parts: FactorParts, tasks: Sequence[str], *, combined: bool = False, probabilities: bool = True
) -> bytes:
    """:func:`assemble`, serialized: the exact bytes the checker passed, ready to store as an artifact."""
    return _portable(parts, tasks, combined, probabilities)[1]


def assemble_to_file(
    parts: FactorParts | str | os.PathLike[str],
    tasks: Sequence[str],
    path: str | os.PathLike[str],
    *,
    combined: bool = False,
    probabilities: bool = True,
) -> onnx.ModelProto:
    """Assemble (from parts or a factor-set directory) and write the graph to ``path`` atomically."""
    if not isinstance(parts, FactorParts):
        parts = load_parts(parts)
    model, data = _portable(parts, tasks, combined, probabilities)
    out = Path(path)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return model


def assemble_session(
    parts: FactorParts,
    tasks: Sequence[str],
    *,
    combined: bool = False,
    probabilities: bool = True,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    spin: bool = True,
) -> Any:
    """An ONNX Runtime session for the assembled graph: same inputs, outputs and metadata as :func:`assemble`.

    On the CPU it is built from cached per-part pieces: each part optimised by ORT once (the costly NCHWc
    layout pass would otherwise run on every new subset) with its weights kept as OrtValues, so a new subset
    costs a small composition, the checker and a session over a ~50 KB graph. Other providers get the portable
    graph with ORT's optimisations applied at session creation.
    """
    if list(providers or [ort.CPU]) != [ort.CPU]:
        data = assemble_bytes(parts, tasks, combined=combined, probabilities=probabilities)
        return ort.create_session(data, providers=providers, options=ort.session_options(threads, spin=spin))
    names, union = _plan(parts, tasks, combined)
    pieces = [_cpu_piece(parts, None)] + [_cpu_piece(parts, n) for n in names]
    model = _header(parts, names, union, probabilities, [p.header for p in pieces])
    tail = onnx.GraphProto()
    _finish(tail, parts, names, union, probabilities)
    # The checker insists that external data exist as files, but these weights live in OrtValues (from parts
    # whose sha256 was verified), so it checks a twin of the served graph that declares them as typed inputs:
    # same nodes, names and wiring, so single assignment, types, shapes of the rest and opsets are all covered.
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    # Pieces are kept serialized: merging bytes appends their nodes and initializers in one C call (protobuf
    # merge semantics), three times cheaper than copying the messages one by one from Python.
    model.graph.MergeFromString(b"".join(p.served for p in pieces) + tail.SerializeToString())
    twin.graph.MergeFromString(b"".join(p.checked for p in pieces) + tail.SerializeToString())
    _check(twin.SerializeToString(), names)
    weights = {k: v for p in pieces for k, v in p.weights.items()}
    data = model.SerializeToString()
    return ort.create_session(
        data, options=ort.session_options(threads, optimize=False, spin=spin), external_weights=weights
    )


def routed_graph(parts: FactorParts) -> bytes:
    """Every task of ``parts`` in one checked graph, each task branch over rows of the batch chosen per call.

    Inputs: ``x`` (the batch) and, per task, ``rows_<task>`` (int64 row indices into the batch, any order, empty
    for a task nobody in the batch asked for). The CKN runs once over every row; each task branch gathers its rows
    of ``x`` and ``z_c`` and outputs ``logits_<task>`` and ``probs_<task>`` for those rows, in the order given.
    ONNX Runtime runs every node of a graph whatever outputs are asked for, so a task given no rows costs a
    branch over an empty batch (microseconds), not a full one.
    """
    names = list(parts.task_names)
    model = _header(parts, names, None, True, [parts.ckn, *(parts.tasks[n] for n in names)])
    model.graph.name = "kf_routed"
    _add_renamed(model.graph, parts.ckn.graph, _CKN, {})
    for name in names:
        rows, x, z_c = f"{ROWS_PREFIX}{name}", f"{name}/x", f"{name}/z_c"
        model.graph.input.append(helper.make_tensor_value_info(rows, onnx.TensorProto.INT64, [rows]))
        model.graph.node.extend(
            [
                helper.make_node("Gather", ["x", rows], [x], axis=0, name=f"{name}/kf_rows_x"),
                helper.make_node("Gather", ["z_c", rows], [z_c], axis=0, name=f"{name}/kf_rows_z_c"),
            ]
        )
        _add_renamed(model.graph, parts.tasks[name].graph, f"{name}/", {"logits": f"logits_{name}", "x": x, "z_c": z_c})
    _finish(model.graph, parts, names, None, True)
    data: bytes = model.SerializeToString()
    _check(data, names)
    return data


def _portable(
    parts: FactorParts, tasks: Sequence[str], combined: bool, probabilities: bool
) -> tuple[onnx.ModelProto, bytes]:
    names, union = _plan(parts, tasks, combined)
    model = _header(parts, names, union, probabilities, [parts.ckn, *(parts.tasks[n] for n in names)])
    _add_renamed(model.graph, parts.ckn.graph, _CKN, {})
    for name in names:
        _add_renamed(model.graph, parts.tasks[name].graph, f"{name}/", {"logits": f"logits_{name}"})
    _finish(model.graph, parts, names, union, probabilities)
    data = model.SerializeToString()
    _check(data, names)  # the bytes, not the proto: saves a second serialization of the weights
    return model, data


def _check(model: onnx.ModelProto | bytes, names: list[str]) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelFileError(f"the assembled graph for tasks {names} is invalid: {exc}") from exc


def _plan(parts: FactorParts, tasks: Sequence[str], combined: bool) -> tuple[list[str], dict[str, Any] | None]:
    """Validated task names, and the combined classifier's classes (or None)."""
    names = check_task_names(tasks, parts.task_names)
    if not combined:
        return names, None
    metas = [parts.manifest["tasks"][n] for n in names]
    head = combined_head([(n, m["output"], m["classes"], m["class_names"]) for n, m in zip(names, metas, strict=True)])
    return names, {"output": head.output, "classes": head.classes, "class_names": head.class_names}


def _header(
    parts: FactorParts,
    names: list[str],
    union: dict[str, Any] | None,
    probabilities: bool,
    models: list[onnx.ModelProto],
) -> onnx.ModelProto:
    """An empty-bodied model with the parts' highest IR and opset versions, input ``x`` and the description."""
    model = onnx.ModelProto(ir_version=max(m.ir_version for m in models), producer_name="kf_core.assemble")
    opsets: dict[str, int] = {}
    for op in (op for m in models for op in m.opset_import):
        opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets.items())
    model.graph.name = "kf_assembly"
    model.graph.input.extend(parts.ckn.graph.input)
    tasks = [
        {"name": n, "logits": f"logits_{n}", "probs": f"probs_{n}" if probabilities else None}
        | {k: parts.manifest["tasks"][n][k] for k in ("output", "classes", "class_names")}
        for n in names
    ]
    description = {
        "format": ASSEMBLY_FORMAT,
        "source_manifest_sha256": parts.manifest_sha256,
        "input": parts.manifest["input"],
        "tasks": tasks,
        "combined": None if union is None else {"logits": f"logits_{COMBINED}", "probs": f"probs_{COMBINED}"} | union,
    }
    props = {"kf_assembly": json.dumps(description, separators=(",", ":"))}
    if union is not None:
        props |= {
            "combined_classes": json.dumps(union["classes"]),
            "combined_class_names": json.dumps(union["class_names"]),
        }
    helper.set_model_props(model, props)
    return model


def _finish(
    graph: onnx.GraphProto, parts: FactorParts, names: list[str], union: dict[str, Any] | None, probabilities: bool
) -> None:
    """Add the softmax heads and the graph outputs."""
    for name in names:
        declared = parts.tasks[name].graph.output[0]  # float32 [batch, k]
        heads = [f"logits_{name}"]
        if probabilities:
            graph.node.append(helper.make_node("Softmax", heads, [f"probs_{name}"], axis=1))
            heads.append(f"probs_{name}")
        for head in heads:
            out = graph.output.add()
            out.CopyFrom(declared)
            out.name = head
    if union is not None:
        logits = [f"logits_{n}" for n in names]
        graph.node.append(helper.make_node("Concat", logits, [f"logits_{COMBINED}"], axis=1))
        graph.node.append(helper.make_node("Softmax", [f"logits_{COMBINED}"], [f"probs_{COMBINED}"], axis=1))
        k = len(union["classes"])
        for head in (f"logits_{COMBINED}", f"probs_{COMBINED}"):
            graph.output.append(helper.make_tensor_value_info(head, onnx.TensorProto.FLOAT, ["batch", k]))


def _add_renamed(graph: onnx.GraphProto, part: onnx.GraphProto, prefix: str, outputs: dict[str, str]) -> None:
    """Append ``part``'s nodes and initializers with every name prefixed, except the shared inputs; ``outputs``
    names what some tensors (the part's output, or a shared input) become instead."""

    def rename(s: str) -> str:
        if s == "":  # marks an omitted optional input
            return s
        if s in outputs:
            return outputs[s]
        return s if s in _SHARED else prefix + s

    for node in part.node:
        new = graph.node.add()
        new.CopyFrom(node)
        new.name = prefix + node.name
        del new.input[:]
        new.input.extend(rename(s) for s in node.input)
        del new.output[:]
        new.output.extend(rename(s) for s in node.output)
    start = len(graph.initializer)
    graph.initializer.extend(part.initializer)
    for init in graph.initializer[start:]:
        init.name = rename(init.name)


@dataclass(frozen=True)
class _CpuPiece:
    """One part, ORT-optimised for this CPU and renamed for assembly, its large weights held in ``weights``."""

    header: onnx.ModelProto  # IR version and opsets only
    served: bytes  # a GraphProto: nodes, small initializers and external-data stubs standing for ``weights``
    checked: bytes  # the same with the stubs declared as graph inputs instead, for onnx.checker
    weights: dict[str, Any]  # name -> OrtValue


_PIECE_LOCK = threading.Lock()


def _cpu_piece(parts: FactorParts, task: str | None) -> _CpuPiece:
    key = f"cpu:{task or _CKN}"
    piece = parts.cache.get(key)
    if piece is None:
        with _PIECE_LOCK:  # one thread builds it; the others wait for it rather than building it again
            piece = parts.cache.get(key) or parts.cache.setdefault(key, _build_piece(parts, task))
    assert isinstance(piece, _CpuPiece)
    return piece


def _build_piece(parts: FactorParts, task: str | None) -> _CpuPiece:
    source = parts.ckn if task is None else parts.tasks[task]
    optimized = ort.optimize_for_cpu(source.SerializeToString())
    graph = onnx.GraphProto()
    prefix, outputs = (_CKN, {}) if task is None else (f"{task}/", {"logits": f"logits_{task}"})
    _add_renamed(graph, optimized.graph, prefix, outputs)
    weights = ort.detach_weights(graph)
    checked = onnx.GraphProto(node=graph.node)
    for t in graph.initializer:
        if t.name in weights:
            checked.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            checked.initializer.append(t)
    header = onnx.ModelProto(ir_version=optimized.ir_version, opset_import=optimized.opset_import)
    return _CpuPiece(header, graph.SerializeToString(), checked.SerializeToString(), weights)
