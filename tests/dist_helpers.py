"""Run a tiny factorization in several real processes (spawned, gloo on CPU) for the distributed tests.

Spawned processes import this module by name, so the worker lives here rather than in a test file.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
from pathlib import Path
from typing import Any

import torch

from kf_core.distributed import DistConfig, process_group
from kf_core.loop import Callback, TrainState
from kf_core.tasks import TaskSpec
from kf_core.teacher import load_teacher
from kf_core.train import factorize
from tests.factories import tiny_dataset, tiny_factor_config, tiny_train_config

TASKS = [TaskSpec(name="bright", output="bright"), TaskSpec(name="half", output="half")]


class StopAt(Callback):
    """Cancel (``how="cancel"``) or kill this process outright (``how="die"``) at a global step."""

    def __init__(self, step: int, how: str) -> None:
        self.step, self.how = step, how

    def on_step_end(self, state: TrainState) -> None:
        if state.global_step >= self.step:
            if self.how == "die":
                os._exit(17)  # a lost process: no cleanup, no goodbye to the group
            state.cancel = True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_factorize(teacher_dir: Path, out: Path, *, rank: int, world: int, port: int, job: dict[str, Any]) -> None:
    """One process of a group: factorize the tiny data and record the outcome (weights or error) in ``out``."""
    torch.set_num_threads(1)
    cfg = tiny_train_config(epochs=job.get("epochs", 3), checkpoint_every=2)
    stop = [StopAt(job["stop_at"], job.get("how", "cancel"))] if "stop_at" in job else []
    result: dict[str, Any] = {"rank": rank}
    try:
        with process_group(
            DistConfig(rank=rank, world_size=world, master_port=port, timeout_s=job.get("timeout", 60))
        ) as d:
            run = factorize(
                teacher=load_teacher(teacher_dir),
                train=tiny_dataset(96),
                tasks=TASKS,
                factor_config=tiny_factor_config(),
                train_config=cfg,
                callbacks=stop,
                checkpoint=out / "checkpoint.pt",
                dist=d,
            )
        torch.save(run.model.state_dict(), out / f"weights{rank}.pt")
        result["epochs"] = len(run.history)
    except BaseException as e:  # the test reads what happened
        result["error"] = f"{type(e).__name__}: {e}"[:300]
    (out / f"result{rank}.json").write_text(json.dumps(result))


def run_group(teacher_dir: Path, out: Path, world: int, job: dict[str, Any], timeout: float = 120) -> list[Any]:
    """Start ``world`` spawned processes, wait for all, return each rank's result (None if it left none)."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [
        ctx.Process(
            target=run_factorize, args=(teacher_dir, out), kwargs={"rank": r, "world": world, "port": port, "job": job}
        )
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
        if p.is_alive():  # a hang is a failure of what we test: do not leave it behind
            p.kill()
            p.join()
    results = []
    for r in range(world):
        path = out / f"result{r}.json"
        results.append(json.loads(path.read_text()) if path.exists() else None)
        path.unlink(missing_ok=True)
    return results
