"""Verify an exported factor set brought in from elsewhere (``kf factor-sets import``), without torch.

:func:`verify_factor_set` checks what a job's own registration relies on: every part hashes to the sha256 its
manifest records and parses as ONNX (:func:`kf_core.parts.load_parts`); the graph assembled from all tasks gives
the same logits as running the CKN and each task part on their own (the composition is exact); and the run's
report, when given, records the run's own assembly-versus-torch check of exactly these tasks (a run writes its
report only after that check passed, see :func:`kf_core.run_factorization`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from kf_core.assemble import assemble
from kf_core.errors import ExportMismatchError
from kf_core.ort import create_session
from kf_core.parts import FactorParts, load_parts

__all__ = ["VERIFY_ATOL", "verify_factor_set"]

VERIFY_ATOL = 1e-4  # the export tolerance: atol x max(1, largest |logit|)


def verify_factor_set(
    directory: str | os.PathLike[str], *, report: Mapping[str, Any] | None = None, samples: int = 16
) -> dict[str, Any]:
    """Verify the factor set in ``directory``; raise :class:`ModelFileError` or :class:`ExportMismatchError`."""
    parts = load_parts(directory, cache=False)
    x = _sample(parts, samples)
    names = parts.task_names
    fused = create_session(assemble(parts, names)).run([f"logits_{n}" for n in names], {"x": x})
    (z_c,) = create_session(parts.ckn).run(["z_c"], {"x": x})
    worst = 0.0
    for name, have in zip(names, fused, strict=True):
        (want,) = create_session(parts.tasks[name]).run(["logits"], {"x": x, "z_c": z_c})
        diff = float(np.max(np.abs(want - have))) if want.size else 0.0
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        if not diff <= VERIFY_ATOL * scale:
            raise ExportMismatchError(
                f"the assembled graph's logits_{name} differ from the task part run alone by {diff:.3g}; "
                "the parts do not compose; not imported"
            )
        worst = max(worst, diff)
    recorded = None
    if report is not None:
        assembly = report.get("assembly") or {}
        recorded = assembly.get("max_abs_diff")
        if recorded is None or sorted(assembly.get("tasks") or []) != sorted(names):
            raise ExportMismatchError(
                "report.json records no assembly check of these tasks (assembly.max_abs_diff and assembly.tasks); "
                "import a run directory written by `kf factorize`"
            )
    return {"tasks": names, "max_abs_diff": worst, "samples_compared": len(x), "recorded_drift": recorded}


def _sample(parts: FactorParts, n: int) -> np.ndarray:
    shape = [int(v) for v in parts.manifest["input"]["shape"][1:]]
    return np.random.default_rng(0).normal(0, 1, (n, *shape)).astype(np.float32)
