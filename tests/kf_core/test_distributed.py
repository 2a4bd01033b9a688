"""Factorization in several processes (torch.distributed, gloo on CPU): one model on every rank, exact resume
with as many processes, resume with another number, cancellation and a lost process, and the launch config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kf_core.distributed import DistConfig
from kf_core.errors import ConfigError, TrainingCancelled
from kf_core.loop import TrainConfig
from kf_core.teacher import save_teacher
from kf_core.train import factorize
from tests.dist_helpers import TASKS, StopAt, run_group
from tests.factories import tiny_dataset, tiny_factor_config, tiny_teacher, tiny_train_config


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    save_teacher(tiny_teacher(tiny_dataset(96), epochs=8), out)
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_train_one_model_and_a_cancelled_run_resumes_exactly(teacher_dir: Path, tmp_path: Path) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir(), split.mkdir()
    assert run_group(teacher_dir, whole, 2, {}) == [{"rank": 0, "epochs": 3}, {"rank": 1, "epochs": 3}]
    assert _same(_weights(whole / "weights0.pt"), _weights(whole / "weights1.pt"))  # gradients were averaged

    # A cancel seen by rank 0 (mid epoch 2, after a checkpoint) stops both processes.
    cancelled = run_group(teacher_dir, split, 2, {"stop_at": 10})
    assert all(r is not None and r["error"].startswith("TrainingCancelled") for r in cancelled), cancelled
    assert run_group(teacher_dir, split, 2, {}) == [{"rank": 0, "epochs": 3}, {"rank": 1, "epochs": 3}]
    assert _same(_weights(split / "weights0.pt"), _weights(whole / "weights0.pt"))


def test_a_checkpoint_resumes_with_another_number_of_processes(teacher_dir: Path, tmp_path: Path) -> None:
    from kf_core.teacher import load_teacher

    teacher = load_teacher(teacher_dir)
    with pytest.raises(TrainingCancelled):  # one process writes a mid-run checkpoint ...
        factorize(
            teacher=teacher,
            train=tiny_dataset(96),
            tasks=TASKS,
            factor_config=tiny_factor_config(),
            train_config=tiny_train_config(epochs=3, checkpoint_every=2),
            callbacks=[StopAt(4, "cancel")],
            checkpoint=tmp_path / "checkpoint.pt",
        )
    assert run_group(teacher_dir, tmp_path, 2, {"stop_at": 10}) == [  # ... two carry it on and checkpoint ...
        {"rank": 0, "error": "TrainingCancelled: cancelled at epoch 1 step 4"},
        {"rank": 1, "error": "TrainingCancelled: cancelled at epoch 1 step 4"},
    ]
    run = factorize(  # ... and one process finishes it
        teacher=teacher,
        train=tiny_dataset(96),
        tasks=TASKS,
        factor_config=tiny_factor_config(),
        train_config=tiny_train_config(epochs=3, checkpoint_every=2),
        checkpoint=tmp_path / "checkpoint.pt",
    )
    assert [row["epoch"] for row in run.history] == [1.0, 2.0, 3.0]


def test_a_lost_process_fails_the_others_instead_of_hanging(teacher_dir: Path, tmp_path: Path) -> None:
    results = run_group(teacher_dir, tmp_path, 2, {"stop_at": 3, "how": "die", "timeout": 20}, timeout=90)
    assert results[0] is None  # rank 0 died without a word
    assert results[1] is not None and "error" in results[1], results  # rank 1 failed cleanly, it did not hang
    assert not results[1]["error"].startswith("TrainingCancelled")


def test_torchrun_variables_are_read_from_the_environment_given() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29501"}
    cfg = DistConfig.from_torchrun_env(env, timeout_s=30)
    assert cfg == DistConfig(
        rank=1, world_size=2, local_rank=1, master_addr="10.0.0.1", master_port=29501, timeout_s=30
    )
    assert DistConfig.from_torchrun_env({}) is None
    with pytest.raises(ConfigError, match="MASTER_PORT"):
        DistConfig.from_torchrun_env({k: v for k, v in env.items() if k != "MASTER_PORT"})
    with pytest.raises(ConfigError, match="rank 2"):
        DistConfig(rank=2, world_size=2)


def test_the_batch_must_split_evenly_over_the_processes() -> None:
    with pytest.raises(ConfigError, match="multiple of processes"):
        TrainConfig(batch_size=15, processes=2)
    assert TrainConfig(batch_size=16, processes=2).processes == 2
