"""Shared pieces of the serving tests: one real (small) dSprites factorization, registered into a test's catalog."""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

TASKS = ("shape", "scale", "orientation", "pos_x", "pos_y")


@dataclass(frozen=True)
class Trained:
    """A factorized teacher: the run directory (parts + report), the torch factor networks and test images."""

    run_dir: Path
    report: dict[str, Any]
    model: Any  # kf_core.factor.FactorNet, eval mode
    x: np.ndarray  # (8, 1, 64, 64) float32 test images

    def logits(self, x: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The factor networks' own per-task logits (torch)."""
        with torch.no_grad():
            out = self.model(torch.from_numpy(self.x if x is None else x))
        return {k: v.numpy() for k, v in out.items()}


def train_small_factor_set(run_dir: Path, *, seed: int = 0) -> Trained:
    """A real factorization of a (trained) MLP teacher on 640 dSprites images: 5 tasks, 1 epoch, MLP parts.
    ``seed`` seeds the factorization only (same teacher), so two seeds give two versions that answer differently."""
    from kf_core.data.spec import DataSpec, load_split
    from kf_core.export import export_factor_set
    from kf_core.factor import FactorConfig, NetSpec
    from kf_core.loop import TrainConfig
    from kf_core.tasks import TaskSpec
    from kf_core.train import factorize, fit_teacher

    split = load_split(DataSpec(source="dsprites", samples=640, seed=0, test_fraction=0.25, split_seed=0))
    cfg = TrainConfig(epochs=1, batch_size=64, lr=3e-3, seed=0, eval_every=0)
    teacher = fit_teacher(train=split.train, backbone=NetSpec("mlp", {"hidden": [32]}), train_config=cfg)
    tasks = [TaskSpec(name=t, output=t) for t in TASKS]
    factor = FactorConfig(ckn=NetSpec("mlp", {"hidden": [32]}), tsn=NetSpec("mlp", {"hidden": [8]}), feature_dim=16)
    run = factorize(
        teacher=teacher,
        train=split.train,
        tasks=tasks,
        factor_config=factor,
        train_config=dataclasses.replace(cfg, seed=seed),
    )
    model = run.model.eval()
    x = split.test.images(slice(0, 8))
    class_names = {t: split.train.classes[t] for t in TASKS}
    export_factor_set(
        model, run_dir / "parts", sample=torch.from_numpy(x), class_names=class_names, output_sizes=teacher.output_sizes
    )
    report = {"recipe": "small", "tasks": {t: {"factor_accuracy": 0.5} for t in TASKS}, "history": []}
    (run_dir / "report.json").write_text(json.dumps(report))
    return Trained(run_dir, report, model, np.ascontiguousarray(x, dtype=np.float32))


def register(trained: Trained, *, session: Any, job: Any, factory: Any, store: Any) -> Any:
    """Register the trained factor set as ``fs`` version 1 (through the job's lease, as a worker would)."""
    from service.catalog.leases import claim_job
    from service.jobs.register import register_factor_set

    lease = claim_job(session=session, job_id=job.id, worker="w:1")
    session.commit()
    assert lease is not None
    return register_factor_set(
        factory=factory, store=store, lease=lease, run_dir=trained.run_dir, report=trained.report
    )


def subsets(tasks: tuple[str, ...] = TASKS) -> list[tuple[str, ...]]:
    """Every non-empty subset, in the factor set's order."""
    return [c for r in range(1, len(tasks) + 1) for c in itertools.combinations(tasks, r)]
