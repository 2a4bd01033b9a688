"""The one place kf_core (and the service) reaches ONNX Runtime: import, session options, sessions.

``onnxruntime`` (CPU) and ``onnxruntime-gpu`` install the same Python package, so exactly one of them must be
present; :func:`import_onnxruntime` says so plainly instead of a bare ``ModuleNotFoundError``. Nothing here
imports torch: serving never needs it.

Besides plain sessions this module offers the two ORT tricks that make assembling a new task subset cheap
(see :func:`kf_core.assemble.assemble_session`): optimising a part once, offline (:func:`optimize_for_cpu`), and
keeping large weights out of the graph's protobuf, as ready ``OrtValue``s (:func:`detach_weights`).
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = [
    "CPU",
    "available_providers",
    "create_session",
    "detach_weights",
    "import_onnxruntime",
    "optimize_for_cpu",
    "session_options",
    "usable_cores",
]

CPU = "CPUExecutionProvider"
DETACHED_LOCATION = "kf-detached-weight"  # external-data location of a weight handed to ORT as an OrtValue

# Weights at least this large are detached; smaller tensors (shapes, axes, biases) stay inline because ORT's
# shape inference reads some of them and copying them costs nothing.
_DETACH_MIN_BYTES = 1024


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or an ImportError that says which extra to install."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise ImportError(
            "ONNX Runtime is not available: install kf-service[cpu] or kf-service[gpu], never both "
            f"(they provide the same 'onnxruntime' package and overwrite each other). Cause: {exc}"
        ) from exc


def available_providers() -> list[str]:
    """Execution providers this ONNX Runtime build offers, in its order of preference."""
    return list(import_onnxruntime().get_available_providers())


def session_options(threads: int | None = None, *, optimize: bool = True, spin: bool = True) -> Any:
    """Fresh ``SessionOptions`` for serving; ``threads`` = intra-op threads (``None``: one per usable core).

    ``spin=True``: the intra-op workers spin-wait between the parallel operators of a run and sleep once it ends
    (ORT's ``force_spinning_stop``), so a run never waits for a sleeping worker to wake per operator, and idle
    workers take no CPU from whatever runs between runs. ``spin=False``: workers sleep whenever they have no work.
    On the reference dSprites graph (2 cores, 2 threads, ORT 1.32) one image runs in 0.5-0.7 ms spinning against
    0.8-1.0 ms sleeping, and 16 images in ~0.35 against ~0.42 ms each; the service's ``KF_INFER_SPIN`` (README)
    gives the throughput it costs under load.

    ``optimize=True`` applies every ORT graph optimisation. On the reference dSprites factor set (bench, 2 cores)
    level ALL runs batch 64 in ~40 ms against ~95 ms at BASIC and ~130 ms with none: the NCHWc convolution
    layout is what matters. It also makes session creation 2-3x slower, which is why assembly optimises parts
    once (:func:`optimize_for_cpu`) and builds its sessions with ``optimize=False``. Execution is sequential:
    one intra-op pool parallelises each convolution better than running the small task branches side by side.
    """
    ort = import_onnxruntime()
    n = threads if threads is not None else usable_cores()
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    so = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    so.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = n
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: ORT's warnings would land on a server's stderr
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.add_session_config_entry("session.force_spinning_stop", "1" if spin else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")  # sequential execution: no inter-op work
    return so


def create_session(
    model: onnx.ModelProto | bytes | str | os.PathLike[str],
    *,
    providers: Sequence[str] | None = None,
    options: Any | None = None,
    external_weights: Mapping[str, Any] | None = None,
) -> Any:
    """An ``InferenceSession`` for a ModelProto, serialized bytes or a file path.

    ``providers`` defaults to CPU only: kf_core compares against torch on the CPU, and choosing a GPU is the
    service runtime's decision. ``options`` defaults to :func:`session_options`; it is consumed when
    ``external_weights`` (the OrtValues of :func:`detach_weights`, by initializer name) are given.
    """
    ort = import_onnxruntime()
    source: bytes | str
    if isinstance(model, bytes):
        source = model
    elif isinstance(model, str | os.PathLike):
        source = str(Path(model))
    else:
        source = model.SerializeToString()
    so = options if options is not None else session_options()
    if external_weights:
        # ORT copies these into the session (a memcpy), so they need not outlive it.
        so.add_external_initializers(list(external_weights), list(external_weights.values()))
    return ort.InferenceSession(source, sess_options=so, providers=list(providers or [CPU]))


def optimize_for_cpu(model: bytes) -> onnx.ModelProto:
    """``model`` after ORT's full CPU graph optimisation, as ORT would run it (hardware-specific: NCHWc layout).

    Only for use in this process, on this machine; never store the result.
    """
    ort = import_onnxruntime()
    so = session_options(1)
    with tempfile.TemporaryDirectory(prefix="kf-ort-") as tmp:
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(model, sess_options=so, providers=[CPU])
        return onnx.load_model(so.optimized_model_filepath)


def detach_weights(graph: onnx.GraphProto) -> dict[str, Any]:
    """Move ``graph``'s large initializers into OrtValues (returned by name), leaving external-data stubs.

    A session over the stubbed graph, with these passed as ``create_session(..., external_weights=...)``, gets
    the weights by one memcpy each, instead of serializing, parsing and unpacking megabytes of protobuf for
    every new task subset. (ORT copies them per session: the memory is not shared between sessions.)
    """
    ort = import_onnxruntime()
    detached: dict[str, Any] = {}
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            continue
        array = numpy_helper.to_array(tensor)
        if array.nbytes < _DETACH_MIN_BYTES:
            continue
        detached[tensor.name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
        stub = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
        stub.data_location = onnx.TensorProto.EXTERNAL
        stub.external_data.add(key="location", value=DETACHED_LOCATION)
        tensor.CopyFrom(stub)
    return detached


def usable_cores() -> int:
    # The cores this process may run on (a container's CPU set), not the host's count.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
