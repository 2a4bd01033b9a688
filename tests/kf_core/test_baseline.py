"""The multi-task KD baseline: parameter matching, training through the shared loop, caching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kf_core.data.base import ArrayDataset
from kf_core.evaluation.baseline import (
    baseline_accuracy,
    count_parameters,
    factor_parameters,
    load_baseline,
    match_width,
    save_baseline,
    train_baseline,
)
from kf_core.factor import FactorConfig, FactorNet, NetSpec
from kf_core.loop import Callback, TrainState
from kf_core.tasks import TaskSpec
from kf_core.teacher import TorchTeacher
from tests.factories import tiny_dataset, tiny_factor_config, tiny_teacher, tiny_train_config

TASKS = [TaskSpec(name="bright", output="bright"), TaskSpec(name="half", output="half")]
DSPRITES = {"shape": 3, "scale": 6, "orientation": 40, "pos_x": 32, "pos_y": 32}


@pytest.fixture(scope="module")
def data() -> ArrayDataset:
    return tiny_dataset(160)


@pytest.fixture(scope="module")
def teacher(data: ArrayDataset) -> TorchTeacher:
    return tiny_teacher(data, epochs=8)


class CountSteps(Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, state: TrainState) -> None:
        self.steps += 1


def _train(teacher: TorchTeacher, data: ArrayDataset, **kw: object) -> object:
    return train_baseline(
        teacher=teacher,
        train=data,
        tasks=TASKS,
        ckn=tiny_factor_config().ckn,
        feature_dim=16,
        target_parameters=3000,
        train_config=kw.pop("cfg", tiny_train_config(epochs=10)),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "config",
    [
        FactorConfig(
            ckn=NetSpec("simpleconv64"), tsn=NetSpec("gaussian_simpleconv64", {"width": 0.25}), feature_dim=64
        ),
        tiny_factor_config(),
    ],
    ids=["simpleconv64", "mlp"],
)
def test_width_is_matched_to_the_factor_set_within_ten_percent(config: FactorConfig) -> None:
    shape = (1, 64, 64) if config.ckn.name == "simpleconv64" else (1, 8, 8)
    heads = DSPRITES if config.ckn.name == "simpleconv64" else {"bright": 3, "half": 2}
    tasks = [TaskSpec(name=n, output=n) for n in heads]
    with torch.device("meta"):
        model = FactorNet(input_shape=shape, tasks=tasks, num_classes=heads, config=config)
    target = factor_parameters(model)
    # The auxiliary heads are training-only and not counted.
    assert target == count_parameters(model) - count_parameters(model.aux_head)
    spec, params = match_width(
        config.ckn, target=target, input_shape=shape, feature_dim=config.feature_dim, heads=heads
    )
    assert abs(params - target) / target < 0.1, (spec, params, target)
    assert spec.kwargs["width"] > 1.0  # one network standing in for a CKN plus several TSNs is wider than the CKN


def test_baseline_learns_every_task_with_kd_and_ce_only(teacher: TorchTeacher, data: ArrayDataset) -> None:
    run = _train(teacher, data)
    acc = baseline_accuracy(run.model, tiny_dataset(200, seed=1), TASKS)  # type: ignore[attr-defined]
    assert acc["bright"] > 0.8 and acc["half"] > 0.8, acc
    losses = {k.split("/")[-1] for k in run.history[-1] if k.startswith(("bright/", "half/"))}  # type: ignore[attr-defined]
    assert losses == {"loss_kd", "loss_cls", "train_acc"}
    assert abs(run.parameters - 3000) / 3000 < 0.1  # type: ignore[attr-defined]


def test_same_seed_same_weights(teacher: TorchTeacher, data: ArrayDataset) -> None:
    cfg = tiny_train_config(epochs=2)
    a, b = _train(teacher, data, cfg=cfg), _train(teacher, data, cfg=cfg)
    sa, sb = a.model.state_dict(), b.model.state_dict()  # type: ignore[attr-defined]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_finished_checkpoint_is_reused_without_training(
    teacher: TorchTeacher, data: ArrayDataset, tmp_path: Path
) -> None:
    ckpt = tmp_path / "checkpoint.pt"
    first = CountSteps()
    _train(teacher, data, cfg=tiny_train_config(epochs=2), checkpoint=ckpt, callbacks=[first])
    again = CountSteps()
    _train(teacher, data, cfg=tiny_train_config(epochs=2), checkpoint=ckpt, callbacks=[again])
    assert first.steps > 0 and again.steps == 0


def test_save_and_load_round_trip_and_stale_key(teacher: TorchTeacher, data: ArrayDataset, tmp_path: Path) -> None:
    run = _train(teacher, data, cfg=tiny_train_config(epochs=2))
    save_baseline(run, tmp_path, key="k1")  # type: ignore[arg-type]
    back = load_baseline(tmp_path, key="k1")
    assert back is not None
    x = torch.from_numpy(data.images(slice(0, 8)))
    want, _ = run.model.forward_all(x)  # type: ignore[attr-defined]
    got, _ = back.model.forward_all(x)
    assert all(torch.allclose(want[n], got[n]) for n in want)
    assert back.history == run.history and back.parameters == run.parameters  # type: ignore[attr-defined]
    assert load_baseline(tmp_path, key="other") is None
    assert load_baseline(tmp_path / "missing", key="k1") is None
