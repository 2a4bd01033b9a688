"""Evaluation of a factorization run: leakage, disentanglement (MIG/DCI), transfer, the multi-task KD baseline,
and the run that measures them all on a run directory and writes its report (``kf evaluate RUN_DIR``).

The engine never imports this package; it reads what the engine writes. Names load lazily so that importing one
probe does not import the whole evaluation run.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "EvalConfig": "kf_core.evaluation.context",
    "run_evaluation": "kf_core.evaluation.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kf_core.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
