"""Predictions from an assembled graph (``kf predict``), without torch.

Reads the assembly's JSON description from the graph's metadata to name tasks and classes, validates the input
batch against the graph's input spec, runs ONNX Runtime and returns plain JSON-serialisable results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kf_core.errors import DataError, InputShapeError, ModelFileError
from kf_core.ort import create_session

__all__ = ["check_batch", "predict_array", "predict_file"]


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


def predict_array(session: Any, x: np.ndarray, *, logits: bool = False) -> dict[str, Any]:
    """Run an assembled graph's session on a batch: per task the labels, class names and probabilities."""
    desc = json.loads(session.get_modelmeta().custom_metadata_map.get("kf_assembly", "null") or "null")
    if not desc:
        raise ModelFileError("this ONNX graph has no kf assembly description; assemble it with `kf assemble`")
    x = check_batch(x, desc["input"]["shape"])
    heads = [(t["name"], t["logits"], t["class_names"]) for t in desc["tasks"]]
    if desc.get("combined"):
        c = desc["combined"]
        heads.append(("combined", c["logits"], c["class_names"]))
    raw = session.run([h[1] for h in heads], {desc["input"]["name"]: x})
    result: dict[str, Any] = {}
    for (name, _, class_names), z in zip(heads, raw, strict=True):
        z = z.astype(np.float64)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        idx = p.argmax(axis=1)
        entry: dict[str, Any] = {
            "labels": idx.tolist(),
            "class_names": [class_names[i] for i in idx],
            "probabilities": p.round(6).tolist(),
        }
        if logits:
            entry["logits"] = z.round(6).tolist()
        result[name] = entry
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
    from kf_core.assemble import read_onnx

    session = create_session(read_onnx(Path(model)).SerializeToString())
    return predict_array(session, x, logits=logits)
