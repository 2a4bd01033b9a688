"""Export torch modules to self-contained ONNX files, always verified against torch.

:func:`export_module` writes one module; :func:`export_factor_set` writes the parts of a trained
:class:`~kf_core.factor.FactorNet` (``ckn.onnx``, one ``task_<name>.onnx`` per task) and a ``manifest.json``
that :mod:`kf_core.assemble` reads to compose any task subset without torch. Every graph is checked with
``onnx.checker`` and run in ONNX Runtime at two batch sizes before it is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxscript.optimizer
import torch
from torch import nn

from kf_core.errors import ConfigError, ExportMismatchError, InputShapeError
from kf_core.factor import FactorNet
from kf_core.ort import create_session
from kf_core.parts import FORMAT, MANIFEST

__all__ = ["EXPORT_ATOL", "drift", "export_factor_set", "export_module"]

BATCH = "batch"  # the name of every input's and output's dynamic first axis
# 1e-4, not 1e-5: a trained dSprites task part (8 epochs, logits up to 8.8) exported with a max abs difference of
# 9.97e-5 (1.1e-5 relative) from float32 convolutions computed in a different order by torch and ONNX Runtime, and
# was refused. A real fault is orders of magnitude larger (weights moved by 1e-3 drift the logits by ~1e-2).
EXPORT_ATOL = 1e-4  # how far an ONNX graph may drift from torch: atol x max(1, largest |output|), see drift()


def drift(want: np.ndarray, have: np.ndarray) -> tuple[float, float]:
    """``(max abs difference, scale)`` of ``have`` against ``want``; a graph agrees when ``diff <= atol * scale``.

    float32 rounding grows with the outputs' magnitude (logits of a trained teacher reach tens), so the tolerance
    is ``atol`` for outputs up to 1 in size and ``atol`` relative to the largest output beyond that. A NaN
    difference never compares as within the tolerance.
    """
    if not want.size:
        return 0.0, 1.0
    return float(np.max(np.abs(want - have))), max(1.0, float(np.max(np.abs(want))))


def export_module(
    module: nn.Module,
    sample_inputs: tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = 18,
    atol: float = EXPORT_ATOL,
) -> onnx.ModelProto:
    """Export ``module`` (in eval mode) to ``path`` with a dynamic ``batch`` axis, verify it, and return it.

    Verification: ``onnx.checker`` (full check, with shape inference), then ONNX Runtime on ``sample_inputs``
    and on a batch two rows larger, each compared with torch; a max abs difference above ``atol`` raises
    :class:`ExportMismatchError` and nothing is written. The module's train/eval mode is restored afterwards.
    """
    if len(sample_inputs) != len(input_names):
        raise ConfigError(f"{len(sample_inputs)} sample inputs but {len(input_names)} input names")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            model = _to_onnx(module, sample_inputs, list(input_names), list(output_names), opset)
            onnx.checker.check_model(model, full_check=True)
            _check_dynamic_batch(model)
            _verify(module, model, sample_inputs, list(input_names), list(output_names), atol)
            data = model.SerializeToString()
    finally:
        module.train(was_training)
    _atomic_write(Path(path), data)
    return model


def export_factor_set(
    model: FactorNet,
    out_dir: str | os.PathLike[str],
    *,
    sample: torch.Tensor,
    class_names: Mapping[str, Sequence[str]] | None = None,
    output_sizes: Mapping[str, int] | None = None,
    atol: float = EXPORT_ATOL,
    opset: int = 18,
) -> dict[str, Any]:
    """Write ``ckn.onnx``, ``task_<name>.onnx`` per task and ``manifest.json`` to ``out_dir``; return the manifest.

    ``sample`` is a real input batch ``(B, *input_shape)`` (``(B, D)``, ``(B, C, H, W)``, ...) used to verify
    every part. ``class_names`` and
    ``output_sizes`` are keyed by teacher output name; class names default to the class indices as strings.
    The manifest is written last, so a directory with a manifest holds a complete, verified factor set.
    """
    if tuple(sample.shape[1:]) != model.input_shape:
        raise InputShapeError(
            f"sample has shape {tuple(sample.shape)}, but the factor network takes (B, *{model.input_shape})"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # An old manifest must not vouch for a directory whose parts are being replaced.
    (out / MANIFEST).unlink(missing_ok=True)
    tasks_meta = {t.name: _task_meta(model, t.name, class_names, output_sizes) for t in model.tasks}
    was_training = model.training
    model.eval()
    try:
        ckn = model.ckn_part()
        export_module(ckn, (sample,), out / "ckn.onnx", input_names=["x"], output_names=["z_c"], opset=opset, atol=atol)
        with torch.no_grad():
            z_c = ckn(sample)
        tasks: dict[str, Any] = {}
        for name, meta in tasks_meta.items():
            file = f"task_{name}.onnx"
            export_module(
                model.task_part(name),
                (sample, z_c),
                out / file,
                input_names=["x", "z_c"],
                output_names=["logits"],
                opset=opset,
                atol=atol,
            )
            tasks[name] = {"file": file, "sha256": _sha256_file(out / file), **meta}
    finally:
        model.train(was_training)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "input": {"name": "x", "shape": [None, *model.input_shape], "dtype": "float32"},
        "feature_dim": model.feature_dim,
        "opset": opset,
        "config": model.config.to_json(),
        "ckn": {"file": "ckn.onnx", "sha256": _sha256_file(out / "ckn.onnx")},
        "tasks": tasks,
    }
    _atomic_write(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def _to_onnx(
    module: nn.Module, sample: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str], opset: int
) -> onnx.ModelProto:
    # The TorchScript exporter (dynamo=False) followed by onnxscript's optimizer, not torch.export
    # (dynamo=True). Measured on every registered net at width 0.25 (torch 2.13, 2 cores): both reproduce torch
    # to <= 4e-6 with BatchNorm folded into Conv, but torch.export takes 1.4-16 s per part against 0.01-1.7 s,
    # and a factor set exports (tasks + 1) parts. The TorchScript graph alone is less tidy (tensor.chunk becomes
    # Shape/Gather/Div/Slice arithmetic); the optimizer folds that to one Slice in ~50 ms, giving graphs as lean
    # as torch.export's, which matters because node count drives ORT session-creation time. torch is pinned,
    # so the exporter's deprecation is a known cost: switching means changing this one function
    # (dynamic_shapes instead of dynamic_axes, and a sample batch >= 2: torch.export specialises size 1).
    axes = {name: {0: BATCH} for name in [*inputs, *outputs]}
    with tempfile.TemporaryDirectory(prefix="kf-export-") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(
            module,
            sample,
            raw,
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
        )
        model = onnxscript.optimizer.optimize(onnx.load_model(raw))
    model.producer_name = "kf_core.export"
    return model


def _check_dynamic_batch(model: onnx.ModelProto) -> None:
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].dim_param != BATCH:
            raise ExportMismatchError(f"exported graph's {value.name!r} has no dynamic {BATCH!r} axis")


def _verify(
    module: nn.Module,
    model: onnx.ModelProto,
    sample: tuple[torch.Tensor, ...],
    inputs: list[str],
    outputs: list[str],
    atol: float,
) -> None:
    session = create_session(model, options=None)
    gen = torch.Generator().manual_seed(0)
    # Two extra random rows: a second batch size, and inputs the exporter never traced.
    bigger = tuple(
        torch.cat([t, torch.randn((2, *t.shape[1:]), generator=gen, dtype=t.dtype).to(t.device)]) for t in sample
    )
    for batch in (sample, bigger):
        expected = module(*batch)
        expected = expected if isinstance(expected, tuple | list) else (expected,)
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(inputs, batch, strict=True)}
        try:
            got = session.run(outputs, feeds)
        except Exception as exc:  # ORT raises its own exception types; any failure is a bad export
            raise ExportMismatchError(
                f"ONNX Runtime failed to run the exported graph at batch {len(batch[0])}: {exc}"
            ) from exc
        for name, want, have in zip(outputs, expected, got, strict=True):
            want_np = want.detach().cpu().numpy()
            if want_np.shape != have.shape:
                raise ExportMismatchError(
                    f"output {name!r} at batch {len(batch[0])}: ONNX shape {have.shape}, torch {want_np.shape}"
                )
            diff, scale = drift(want_np, have)
            if not diff <= atol * scale:  # also catches NaN
                raise ExportMismatchError(
                    f"output {name!r} at batch {len(batch[0])}: max abs difference {diff:.3g} between ONNX "
                    f"Runtime and torch exceeds {atol:g} x max(1, largest |output| = {scale:.3g})"
                )


def _task_meta(
    model: FactorNet,
    name: str,
    class_names: Mapping[str, Sequence[str]] | None,
    output_sizes: Mapping[str, int] | None,
) -> dict[str, Any]:
    task = model.task(name)
    k = model.num_classes[name]
    if task.classes is not None:
        classes = list(task.classes)
    elif output_sizes is not None and task.output in output_sizes:
        classes = task.class_index(output_sizes)
    else:
        classes = list(range(k))
    if len(classes) != k:
        raise ConfigError(f"task {name!r} has {k} logits but covers {len(classes)} classes of {task.output!r}")
    names = [str(c) for c in classes]
    if class_names is not None and task.output in class_names:
        all_names = list(class_names[task.output])
        if max(classes) >= len(all_names):
            raise ConfigError(
                f"class_names[{task.output!r}] has {len(all_names)} names, but task {name!r} uses class {max(classes)}"
            )
        names = [str(all_names[c]) for c in classes]
    return {"output": task.output, "classes": classes, "class_names": names, "num_classes": k}


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    # A temp file in the same directory, then rename: readers never see a half-written part. Created with
    # open(), not mkstemp(), so it gets the usual umask-derived permissions rather than 0600.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
