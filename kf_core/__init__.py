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
from typing import TYPE_CHECKING, Any

from kf_core.ort import import_onnxruntime as _import_onnxruntime

_import_onnxruntime()  # fail now, with the fix in the message, rather than deep inside a run

if TYPE_CHECKING:  # the same names, eagerly, for type checkers; at run time they load on first use
    from kf_core.assemble import (
        ROWS_PREFIX,
        assemble,
        assemble_bytes,
        assemble_session,
        assemble_to_file,
        load_parts,
        routed_graph,
    )
    from kf_core.data import (
        ArrayDataset,
        DataSpec,
        load_breast_cancer,
        load_digits,
        load_dsprites,
        load_image_folder,
        load_npz,
        load_split,
        load_table,
        save_npz,
    )
    from kf_core.data.dsprites import class_names as dsprites_class_names
    from kf_core.distributed import DistConfig, process_group
    from kf_core.engine_demo import demo_recipe, run_demo, varied_samples
    from kf_core.errors import KfError
    from kf_core.export import export_factor_set
    from kf_core.extend import extend_tasks, remove_tasks, run_extension
    from kf_core.factor import FactorConfig, FactorNet, NetSpec
    from kf_core.loop import Callback, TrainConfig, TrainState
    from kf_core.nets import create_net, list_nets
    from kf_core.parts import FactorParts
    from kf_core.pipeline import run_factorization, run_teacher_fit
    from kf_core.predict import AssemblyDescription, check_batch, describe_assembly, predict_file, prediction_json
    from kf_core.progress_bar import ProgressBar, epoch_text
    from kf_core.recipes import Recipe, get_recipe, list_recipes
    from kf_core.registry import register_net
    from kf_core.shapes import check_input_shape
    from kf_core.tasks import (
        COMBINED,
        CombinedHead,
        TaskSpec,
        check_task_names,
        class_groups,
        combined_head,
        one_vs_all,
        select_tasks,
        validate_tasks,
    )
    from kf_core.teacher import OnnxTeacher, Teacher, TorchScriptTeacher, load_teacher, save_teacher, save_torchscript
    from kf_core.train import factorize, fit_teacher
    from kf_core.verify import verify_factor_set

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
    "load_table": "kf_core.data",
    "save_npz": "kf_core.data",
    "load_breast_cancer": "kf_core.data",
    "check_input_shape": "kf_core.shapes",
    "load_image_folder": "kf_core.data",
    "TaskSpec": "kf_core.tasks",
    "class_groups": "kf_core.tasks",
    "one_vs_all": "kf_core.tasks",
    # networks
    "create_net": "kf_core.nets",
    "list_nets": "kf_core.nets",
    "register_net": "kf_core.registry",
    # teachers
    "Teacher": "kf_core.teacher",
    "load_teacher": "kf_core.teacher",
    "save_teacher": "kf_core.teacher",
    "save_torchscript": "kf_core.teacher",
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
    "DistConfig": "kf_core.distributed",
    "process_group": "kf_core.distributed",
    "extend_tasks": "kf_core.extend",
    "run_extension": "kf_core.extend",
    "remove_tasks": "kf_core.extend",
    # export and assembly
    "export_factor_set": "kf_core.export",
    "load_parts": "kf_core.assemble",
    "assemble": "kf_core.assemble",
    "assemble_to_file": "kf_core.assemble",
    # engine helpers the service and command line use
    "OnnxTeacher": "kf_core.teacher",
    "TorchScriptTeacher": "kf_core.teacher",
    "select_tasks": "kf_core.tasks",
    "validate_tasks": "kf_core.tasks",
    "TrainState": "kf_core.loop",
    "ProgressBar": "kf_core.progress_bar",
    "demo_recipe": "kf_core.engine_demo",
    "run_demo": "kf_core.engine_demo",
    "varied_samples": "kf_core.engine_demo",
    "epoch_text": "kf_core.progress_bar",
    "dsprites_class_names": "kf_core.data.dsprites:class_names",
    # serving (no torch): parts, assembled sessions, batch checks
    "FactorParts": "kf_core.parts",
    "COMBINED": "kf_core.tasks",
    "CombinedHead": "kf_core.tasks",
    "check_task_names": "kf_core.tasks",
    "combined_head": "kf_core.tasks",
    "assemble_bytes": "kf_core.assemble",
    "assemble_session": "kf_core.assemble",
    "routed_graph": "kf_core.assemble",
    "ROWS_PREFIX": "kf_core.assemble",
    "AssemblyDescription": "kf_core.predict",
    "describe_assembly": "kf_core.predict",
    "prediction_json": "kf_core.predict",
    "check_batch": "kf_core.predict",
    "predict_file": "kf_core.predict",
    "verify_factor_set": "kf_core.verify",
}

__all__ = [  # the names of _EXPORTS (tests/kf_core/test_package.py keeps the two equal)
    "COMBINED",
    "ROWS_PREFIX",
    "ArrayDataset",
    "AssemblyDescription",
    "Callback",
    "CombinedHead",
    "DataSpec",
    "DistConfig",
    "FactorConfig",
    "FactorNet",
    "FactorParts",
    "KfError",
    "NetSpec",
    "OnnxTeacher",
    "ProgressBar",
    "Recipe",
    "TaskSpec",
    "Teacher",
    "TorchScriptTeacher",
    "TrainConfig",
    "TrainState",
    "assemble",
    "assemble_bytes",
    "assemble_session",
    "assemble_to_file",
    "check_batch",
    "check_input_shape",
    "check_task_names",
    "class_groups",
    "combined_head",
    "create_net",
    "demo_recipe",
    "describe_assembly",
    "dsprites_class_names",
    "epoch_text",
    "export_factor_set",
    "extend_tasks",
    "factorize",
    "fit_teacher",
    "get_recipe",
    "list_nets",
    "list_recipes",
    "load_breast_cancer",
    "load_digits",
    "load_dsprites",
    "load_image_folder",
    "load_npz",
    "load_parts",
    "load_split",
    "load_table",
    "load_teacher",
    "one_vs_all",
    "predict_file",
    "prediction_json",
    "process_group",
    "register_net",
    "remove_tasks",
    "routed_graph",
    "run_demo",
    "run_extension",
    "run_factorization",
    "run_teacher_fit",
    "save_npz",
    "save_teacher",
    "save_torchscript",
    "select_tasks",
    "validate_tasks",
    "varied_samples",
    "verify_factor_set",
]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'kf_core' has no attribute {name!r}")
    module, _, attr = target.partition(":")  # "module:attr" exports a name under another one
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
