"""Tasks: what a factor network is trained to predict, read off the teacher.

A task is either one whole output (head) of a multi-head teacher (dSprites: ``shape``, ``scale``, ...), or a
subset of one output's classes (one-vs-all, or class groups such as CIFAR-10 vehicles/animals). Labels come
from the dataset's label column of the same name as the output unless ``label`` says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kf_core.errors import ConfigError, EmptyTaskListError, UnknownOutputError, UnknownTaskError

__all__ = [
    "COMBINED",
    "CombinedHead",
    "TaskSpec",
    "check_task_names",
    "class_groups",
    "combined_head",
    "one_vs_all",
    "select_tasks",
    "task_labels",
    "validate_tasks",
]

COMBINED = "combined"  # the name of the combined head's outputs (logits_combined, probs_combined)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class TaskSpec:
    """One task of a factorization."""

    name: str  # identifier; becomes the ONNX output name ``logits_<name>``
    output: str  # the teacher output (head) this task reads
    classes: tuple[int, ...] | None = None  # subset of the output's classes, in order; None = all of them
    label: str | None = None  # dataset label column; None = same as ``output``

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"task name {self.name!r} is not valid: use a letter followed by letters, digits or "
                "underscores (at most 64 characters)"
            )
        if self.classes is not None:
            if len(self.classes) == 0:
                raise ConfigError(f"task {self.name!r}: classes must not be empty (omit it to use all)")
            if len(set(self.classes)) != len(self.classes) or min(self.classes) < 0:
                raise ConfigError(f"task {self.name!r}: classes must be distinct non-negative class indices")
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))

    @property
    def label_column(self) -> str:
        return self.label or self.output

    @property
    def is_class_subset(self) -> bool:
        return self.classes is not None

    def num_classes(self, output_sizes: Mapping[str, int]) -> int:
        return len(self.classes) if self.classes is not None else int(output_sizes[self.output])

    def class_index(self, output_sizes: Mapping[str, int]) -> list[int]:
        """The teacher output's class indices this task covers, in the task's order."""
        if self.classes is not None:
            return list(self.classes)
        return list(range(int(output_sizes[self.output])))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes) if self.classes is not None else None
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TaskSpec:
        classes = d.get("classes")
        return cls(
            name=str(d["name"]),
            output=str(d.get("output") or d["name"]),
            classes=tuple(int(c) for c in classes) if classes is not None else None,
            label=d.get("label"),
        )


def one_vs_all(output: str, class_names: Sequence[str]) -> list[TaskSpec]:
    """One binary-style task per class of ``output``, named after the class."""
    return [TaskSpec(name=_slug(n), output=output, classes=(i,)) for i, n in enumerate(class_names)]


def class_groups(output: str, groups: Mapping[str, Iterable[int]]) -> list[TaskSpec]:
    """One task per named group of ``output``'s classes, e.g. ``{"vehicles": [0, 1, 8, 9], ...}``."""
    return [TaskSpec(name=name, output=output, classes=tuple(cls)) for name, cls in groups.items()]


def validate_tasks(tasks: Sequence[TaskSpec], output_sizes: Mapping[str, int]) -> list[TaskSpec]:
    """Check tasks against the teacher's outputs (name -> number of classes); return them as a list."""
    tasks = list(tasks)
    if not tasks:
        raise EmptyTaskListError("no tasks given: name at least one task to factorize")
    seen: set[str] = set()
    for t in tasks:
        if t.name in seen:
            raise ConfigError(f"task {t.name!r} is listed twice; task names must be unique")
        seen.add(t.name)
        if t.output not in output_sizes:
            raise UnknownOutputError("teacher output", t.output, list(output_sizes))
        k = int(output_sizes[t.output])
        if t.classes is not None and max(t.classes) >= k:
            raise ConfigError(
                f"task {t.name!r}: class {max(t.classes)} is out of range; output {t.output!r} has {k} classes"
            )
    return tasks


def select_tasks(tasks: Sequence[TaskSpec], names: Iterable[str] | None) -> list[TaskSpec]:
    """The tasks named in ``names`` (in that order); ``None`` selects all."""
    if names is None:
        return list(tasks)
    by_name = {t.name: t for t in tasks}
    chosen = []
    for n in names:
        if n not in by_name:
            raise UnknownTaskError("task", n, list(by_name))
        chosen.append(by_name[n])
    if not chosen:
        raise EmptyTaskListError("the task list is empty: name at least one task")
    return chosen


def check_task_names(tasks: Sequence[str], known: Sequence[str]) -> list[str]:
    """``tasks`` as a list, in the given order, if it names known tasks, at least one and each once; else raise.

    The one check of a requested task list: assembling a graph (:mod:`kf_core.assemble`) and serving a subset
    (the service's factor-set routes) both call it, so a bad list gets the same message everywhere.
    """
    if isinstance(tasks, str):
        raise ConfigError(f"tasks must be a list of task names, not the string {tasks!r}")
    names = list(tasks)
    if not names:
        raise EmptyTaskListError(f"no tasks given: name at least one of {', '.join(known)}")
    seen: set[str] = set()
    for n in names:
        if n not in known:
            raise UnknownTaskError("task", n, list(known))
        if n in seen:
            raise ConfigError(f"task {n!r} is listed twice; name each task once (known: {list(known)})")
        seen.add(n)
    return names


@dataclass(frozen=True)
class CombinedHead:
    """One softmax over the union of several tasks' classes (tasks that are disjoint subsets of one output)."""

    output: str  # the teacher output the tasks read
    classes: list[int]  # the output's class indices, task after task
    class_names: list[str]


def combined_head(tasks: Sequence[tuple[str, str, Sequence[int], Sequence[str]]]) -> CombinedHead:
    """The combined head of ``tasks`` (each ``(name, output, classes, class_names)``), or a ConfigError saying why
    they cannot share one softmax. The one check for the assembled graph and the served combined outputs."""
    names = [t[0] for t in tasks]
    outputs = sorted({t[1] for t in tasks})
    if len(outputs) != 1:
        per_task = ", ".join(f"{t[0]} -> {t[1]}" for t in tasks)
        raise ConfigError(
            "combined=True needs tasks that are class subsets of one teacher output, but these read "
            f"{len(outputs)} outputs ({per_task}); ask without combined, or pick tasks of one output"
        )
    classes = [int(c) for t in tasks for c in t[2]]
    if len(set(classes)) != len(classes):
        raise ConfigError(
            f"combined=True needs disjoint class subsets, but tasks {names} share classes of output "
            f"{outputs[0]!r}; one softmax cannot hold a class twice"
        )
    if COMBINED in names:
        raise ConfigError(f"task {COMBINED!r} clashes with the combined outputs; ask without combined")
    return CombinedHead(outputs[0], classes, [str(n) for t in tasks for n in t[3]])


def task_labels(task: TaskSpec, column: np.ndarray) -> np.ndarray:
    """Map a label column to the task's class indices; samples outside a class subset get -1."""
    if task.classes is None:
        return column.astype(np.int64, copy=False)
    lut = np.full(int(max(column.max(initial=0), max(task.classes))) + 1, -1, dtype=np.int64)
    lut[list(task.classes)] = np.arange(len(task.classes))
    out: np.ndarray = lut[column]
    return out


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "class"
    return s if s[0].isalpha() else f"c_{s}"
