"""One ONNX Runtime session configuration for every peer server of ``bench/peers.py`` (and its in-process
baseline), the same as the KF service's: all graph optimisations, sequential execution, ``PEER_THREADS``
intra-op threads, one inter-op thread, workers spinning within a run and sleeping between runs (``PEER_SPIN=1``,
as ``KF_INFER_SPIN``) or sleeping whenever idle (``PEER_SPIN=0``). The graph and its outputs come from the
environment."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort

GRAPH = os.environ.get("PEER_GRAPH", "")
OUTPUTS = [n for n in os.environ.get("PEER_OUTPUTS", "").split(",") if n]
MAX_BATCH = int(os.environ.get("PEER_MAX_BATCH", "64"))


def make_session(graph: str = GRAPH, threads: int | None = None, spin: bool | None = None) -> Any:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or int(os.environ.get("PEER_THREADS", "1"))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if spin is None:
        spin = os.environ.get("PEER_SPIN", "1") == "1"
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if spin:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
    shape = [1, *session.get_inputs()[0].shape[1:]]
    session.run(OUTPUTS or None, {"x": np.zeros(shape, dtype=np.float32)})  # warm-up, as KF does
    return session
