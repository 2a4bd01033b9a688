"""Predictions from an assembled graph (``kf predict``), without torch.

Reads the assembly's JSON description from the graph's metadata to name tasks and classes, validates the input
batch against the graph's input spec, runs ONNX Runtime and returns plain JSON-serialisable results.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kf_core.errors import DataError, InputShapeError, ModelFileError
from kf_core.ort import create_session
from kf_core.parts import read_onnx
from kf_core.tasks import COMBINED

__all__ = [
    "AssemblyDescription",
    "Head",
    "check_batch",
    "describe_assembly",
    "predict_array",
    "predict_file",
    "prediction_json",
]


def check_batch(x: np.ndarray, shape: list[int | None]) -> np.ndarray:
    """Return ``x`` as float32 if it is a finite, non-empty batch of the graph's input shape, else raise."""
    if x.dtype.kind not in "fiu":
        raise DataError(f"inputs must be numbers, got dtype {x.dtype}")
    want = tuple(shape[1:])
    if x.ndim != len(shape) or tuple(x.shape[1:]) != want:
        raise InputShapeError(f"inputs must have shape (N, {', '.join(map(str, want))}); got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InputShapeError("the input batch is empty; send at least one sample")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise DataError("inputs contain NaN or infinite values; send finite numbers")
    return x


@dataclass(frozen=True)
class Head:
    """One classifier of an assembled graph: a task, or the combined head, and its graph outputs."""

    name: str  # the task's name, or "combined"
    logits: str  # its output names in the graph: logits_<name> and probs_<name> (None if assembled without)
    probs: str | None
    class_names: list[str]


@dataclass(frozen=True)
class AssemblyDescription:
    """What an assembled graph says about itself (``metadata_props["kf_assembly"]``, written by kf_core.assemble)."""

    input_name: str
    input_shape: list[int | None]  # [None, C, H, W]
    heads: list[Head]  # the tasks in the graph's order, then the combined head if it has one


def describe_assembly(session: Any) -> AssemblyDescription:
    """The description of the assembled graph an ONNX Runtime ``session`` runs; ModelFileError if it has none.

    The one reader of the format :mod:`kf_core.assemble` writes: ``kf predict`` and the service's stored
    assemblies both go through it.
    """
    text = session.get_modelmeta().custom_metadata_map.get("kf_assembly")
    if not text or text == "null":
        raise ModelFileError("this ONNX graph has no kf assembly description; assemble it with `kf assemble`")
    try:
        desc = json.loads(text)
        specs = [*desc["tasks"], *([{"name": COMBINED, **desc["combined"]}] if desc.get("combined") else [])]
        heads = [
            Head(str(t["name"]), str(t["logits"]), t.get("probs"), [str(n) for n in t["class_names"]]) for t in specs
        ]
        shape: list[int | None] = [None, *(int(d) for d in desc["input"]["shape"][1:])]
        return AssemblyDescription(str(desc["input"]["name"]), shape, heads)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(
            f"this ONNX graph's kf assembly description is unreadable ({exc}); assemble it again"
        ) from exc


def prediction_json(
    probabilities: np.ndarray, class_names: Sequence[str], logits: np.ndarray | None = None
) -> dict[str, Any]:
    """One head's predictions as the API and ``kf predict`` answer them: per sample the most probable class
    (``labels``, ``class_names``) and the ``probabilities`` (and ``logits`` when given), arrays as passed in."""
    labels = probabilities.argmax(axis=1)
    entry: dict[str, Any] = {
        "labels": labels.tolist(),
        "class_names": [class_names[i] for i in labels],
        "probabilities": probabilities,
    }
    if logits is not None:
        entry["logits"] = logits
    return entry


def predict_array(session: Any, x: np.ndarray, *, logits: bool = False) -> dict[str, Any]:
    """Run an assembled graph's session on a batch: per task the labels, class names and probabilities."""
    desc = describe_assembly(session)
    x = check_batch(x, desc.input_shape)
    raw = session.run([h.logits for h in desc.heads], {desc.input_name: x})
    result: dict[str, Any] = {}
    for head, z in zip(desc.heads, raw, strict=True):
        z = z.astype(np.float64)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        entry = prediction_json(p.round(6), head.class_names, z.round(6) if logits else None)
        result[head.name] = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in entry.items()}
    return result


def predict_file(model: str | Path, inputs: str | Path, *, logits: bool = False) -> dict[str, Any]:
    """``kf predict``: load an assembled ``.onnx`` and an ``.npy`` batch, return predictions per task."""
    path = Path(inputs)
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable .npy array ({e}); save inputs with numpy.save") from e
    if not isinstance(x, np.ndarray):
        raise DataError(f"{path} must hold one array (a .npy file), not an archive")
    session = create_session(read_onnx(Path(model)).SerializeToString())
    return predict_array(session, x, logits=logits)
