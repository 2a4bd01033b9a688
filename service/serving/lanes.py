"""Lanes: where a mixed batch's task parts run side by side on the CPU.

A batch of a resident factor set runs its CKN once, then each task part its requests asked for. On the CPU each
part has one intra-op thread, and the parts are split into ``lanes`` groups of about equal rows (:func:`balance`):
the runtime's inference thread runs one group and the pool's threads the others, so a batch costs one hand-over
per extra lane rather than one per part.
"""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from kf_core import ort

__all__ = ["TaskPool", "balance", "task_pool"]


@dataclass(frozen=True)
class TaskPool:
    """Where a batch's task parts run side by side on the CPU, one intra-op thread each: ``lanes`` groups of parts
    at once, the calling (inference) thread running one group and ``executor``'s threads the others."""

    executor: Executor | None  # None: one lane, the calling thread only
    lanes: int

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


def task_pool(threads: int | None) -> TaskPool:
    """As many lanes as the CKN's intra-op threads (``KF_INFER_THREADS``, default the usable cores). One pool
    serves every resident set: batches run one at a time on the runtime's inference thread."""
    lanes = max(1, threads or ort.usable_cores())
    executor = ThreadPoolExecutor(lanes - 1, thread_name_prefix="kf-task") if lanes > 1 else None
    return TaskPool(executor, lanes)


def balance(rows: dict[str, int], lanes: int) -> list[list[str]]:
    """The parts split into at most ``lanes`` groups of about equal rows (longest first, each to the lightest
    group), the heaviest group first."""
    groups: list[tuple[int, list[str]]] = [(0, []) for _ in range(min(lanes, len(rows)))]
    for name in sorted(rows, key=rows.__getitem__, reverse=True):
        i = min(range(len(groups)), key=lambda j: groups[j][0])
        groups[i] = (groups[i][0] + rows[name], [*groups[i][1], name])
    return [g for _, g in sorted(groups, key=lambda g: -g[0])]
