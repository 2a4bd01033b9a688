"""Which ONNX Runtime execution provider serves predictions: ``KF_DEVICE`` decides, a real session confirms.

``auto`` serves on CUDA when the CUDA provider really loads, else on the CPU; ``cuda`` refuses to start without
it; ``cpu`` never tries. "Really loads" means a probe session lists the CUDA provider in ``get_providers()``:
``get_available_providers()`` only says the wheel was built with it, not that a driver and a GPU are there
(onnxruntime-gpu silently falls back to the CPU when they are not).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx
from onnx import helper

from kf_core._ort import CPU, create_session, import_onnxruntime, session_options
from service.errors import DeviceUnavailableError

__all__ = ["CPU", "CUDA", "Provider", "choose_provider"]

CUDA = "CUDAExecutionProvider"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provider:
    """The provider sessions are created with, and why it was chosen (shown in health, metadata, metrics)."""

    name: str  # CUDAExecutionProvider or CPUExecutionProvider
    reason: str

    @property
    def device(self) -> str:
        return "cuda" if self.name == CUDA else "cpu"

    @property
    def providers(self) -> list[str]:
        """The list a session is created with (CUDA keeps the CPU as ORT's fallback for unsupported nodes)."""
        return [CUDA, CPU] if self.name == CUDA else [CPU]


def choose_provider(device: str, *, available: list[str] | None = None) -> Provider:
    """The provider for ``KF_DEVICE=device``; raises :class:`DeviceUnavailableError` for ``cuda`` without CUDA.

    ``available`` overrides ORT's list of built-in providers (tests simulate a CPU-only build with it).
    """
    if device == "cpu":
        return Provider(CPU, "KF_DEVICE=cpu")
    if device not in ("auto", "cuda"):
        raise ValueError(f"KF_DEVICE must be auto, cpu or cuda, got {device!r}")
    problem = _cuda_problem(available)
    if problem is None:
        return Provider(CUDA, f"KF_DEVICE={device}: the CUDA provider loaded")
    if device == "cuda":
        raise DeviceUnavailableError(
            f"KF_DEVICE=cuda, but the CUDA execution provider does not load: {problem}. Install kf-service[gpu] "
            "(onnxruntime-gpu, never together with onnxruntime) on a host with an NVIDIA driver and a visible GPU, "
            "or set KF_DEVICE=auto to fall back to the CPU"
        )
    log.info("KF_DEVICE=auto: serving on the CPU (%s)", problem)
    return Provider(CPU, f"KF_DEVICE=auto: {problem}; serving on the CPU")


def _cuda_problem(available: list[str] | None) -> str | None:
    """None if a session really runs on CUDA, else what is wrong."""
    ort = import_onnxruntime()
    offered = list(ort.get_available_providers()) if available is None else available
    if CUDA not in offered:
        return f"this ONNX Runtime build offers only {', '.join(offered)} (onnxruntime, not onnxruntime-gpu)"
    try:
        session = create_session(_probe_model(), providers=[CUDA, CPU], options=session_options(1))
    except Exception as exc:  # ORT raises its own exception types for missing libraries and drivers
        return f"creating a CUDA session failed ({exc})"
    if session.get_providers()[0] != CUDA:
        return "ONNX Runtime fell back to the CPU (no usable GPU, driver or CUDA/cuDNN libraries)"
    return None


def _probe_model() -> bytes:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data
