"""kf_core: the knowledge-factorization engine.

Factorize a frozen teacher into a common-knowledge network (CKN) and one task-specific network per task with
the InfoMax-Bottleneck objective, export each part to ONNX, and assemble any subset of tasks into one ONNX
graph without fine-tuning (and without torch)::

    from kf_core import get_recipe, load_split, load_teacher, factorize, export_factor_set, load_parts, assemble

The names below are loaded lazily, so ``import kf_core.assemble`` in a serving process never pulls in torch.
Importing the package fails with a clear message when no ONNX Runtime wheel is installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from kf_core._ort import import_onnxruntime as _import_onnxruntime

_import_onnxruntime()  # fail now, with the fix in the message, rather than deep inside a run

_EXPORTS: dict[str, str] = {
    # errors
    "KfError": "kf_core.errors",
    # data and tasks
    "ArrayDataset": "kf_core.data",
    "DataSpec": "kf_core.data",
    "load_split": "kf_core.data",
    "load_dsprites": "kf_core.data",
    "load_digits": "kf_core.data",
    "load_npz": "kf_core.data",
    "load_image_folder": "kf_core.data",
    "TaskSpec": "kf_core.tasks",
    "class_groups": "kf_core.tasks",
    "one_vs_all": "kf_core.tasks",
    # networks
    "create_net": "kf_core.registry",
    "list_nets": "kf_core.registry",
    "register_net": "kf_core.registry",
    # teachers
    "Teacher": "kf_core.teacher",
    "load_teacher": "kf_core.teacher",
    "save_teacher": "kf_core.teacher",
    # factorization
    "FactorConfig": "kf_core.factor",
    "FactorNet": "kf_core.factor",
    "NetSpec": "kf_core.factor",
    "TrainConfig": "kf_core.loop",
    "Callback": "kf_core.loop",
    "factorize": "kf_core.train",
    "fit_teacher": "kf_core.train",
    "Recipe": "kf_core.recipes",
    "get_recipe": "kf_core.recipes",
    "list_recipes": "kf_core.recipes",
    "run_factorization": "kf_core.pipeline",
    "run_teacher_fit": "kf_core.pipeline",
    # export and assembly
    "export_factor_set": "kf_core.export",
    "load_parts": "kf_core.assemble",
    "assemble": "kf_core.assemble",
    "assemble_to_file": "kf_core.assemble",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kf_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
