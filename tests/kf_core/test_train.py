"""The training loop: learning, cancellation, checkpoints and exact resume, and the errors users can cause."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kf_core.accuracy import factor_accuracy
from kf_core.data.base import ArrayDataset
from kf_core.errors import (
    CheckpointError,
    ConfigError,
    EmptyTaskListError,
    InputShapeError,
    LabelError,
    TrainingCancelled,
    UnknownOutputError,
)
from kf_core.loop import Callback, TrainConfig, TrainState
from kf_core.tasks import TaskSpec
from kf_core.teacher import TorchTeacher
from kf_core.train import factorize
from tests.factories import tiny_dataset, tiny_factor_config, tiny_teacher, tiny_train_config

TASKS = [TaskSpec(name="bright", output="bright"), TaskSpec(name="half", output="half")]


@pytest.fixture(scope="module")
def data() -> ArrayDataset:
    return tiny_dataset(96)


@pytest.fixture(scope="module")
def teacher(data: ArrayDataset) -> TorchTeacher:
    return tiny_teacher(data, epochs=8)


class CancelAt(Callback):
    def __init__(self, global_step: int) -> None:
        self.global_step = global_step

    def on_step_end(self, state: TrainState) -> None:
        if state.global_step >= self.global_step:
            state.cancel = True


def _run(teacher: TorchTeacher, data: ArrayDataset, **kw: object) -> torch.nn.Module:
    cfg = kw.pop("cfg", tiny_train_config(epochs=3))
    run = factorize(
        teacher=teacher,
        train=data,
        tasks=TASKS,
        factor_config=tiny_factor_config(),
        train_config=cfg,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )
    return run.model


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_factor_networks_learn_the_tasks(teacher: TorchTeacher, data: ArrayDataset) -> None:
    model = _run(teacher, data, cfg=tiny_train_config(epochs=10))
    acc = factor_accuracy(model, tiny_dataset(200, seed=1), TASKS)
    assert acc["bright"] > 0.8 and acc["half"] > 0.8, acc


def test_same_seed_same_weights_and_other_seed_differs(teacher: TorchTeacher, data: ArrayDataset) -> None:
    a = _run(teacher, data)
    b = _run(teacher, data)
    c = _run(teacher, data, cfg=tiny_train_config(epochs=3, seed=1))
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


@pytest.mark.parametrize("cancel_at", [7, 12])  # after the epoch-1 checkpoint / mid-epoch after a step checkpoint
def test_resume_from_checkpoint_equals_uninterrupted_run(
    teacher: TorchTeacher, data: ArrayDataset, tmp_path: Path, cancel_at: int
) -> None:
    cfg = tiny_train_config(epochs=3, checkpoint_every=4)  # 6 steps per epoch
    reference = _run(teacher, data, cfg=cfg)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(TrainingCancelled):
        _run(teacher, data, cfg=cfg, checkpoint=ckpt, callbacks=[CancelAt(cancel_at)])
    assert ckpt.exists()
    saved = torch.load(ckpt, weights_only=True)
    assert 0 < saved["global_step"] < 18  # really a partial run
    resumed = _run(teacher, data, cfg=cfg, checkpoint=ckpt)
    assert _same_weights(reference, resumed)


def test_checkpoint_of_another_run_is_refused(teacher: TorchTeacher, data: ArrayDataset, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    _run(teacher, data, cfg=tiny_train_config(epochs=1), checkpoint=ckpt)
    with pytest.raises(CheckpointError, match="different run"):
        _run(teacher, data, cfg=tiny_train_config(epochs=1, lr=1e-2), checkpoint=ckpt)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        _run(teacher, data, cfg=tiny_train_config(epochs=1), checkpoint=ckpt)


def test_history_and_eval(teacher: TorchTeacher, data: ArrayDataset) -> None:
    run = factorize(
        teacher=teacher,
        train=data,
        tasks=TASKS,
        factor_config=tiny_factor_config(),
        train_config=tiny_train_config(epochs=2, eval_every=1),
        eval_data=tiny_dataset(40, seed=2),
    )
    assert [row["epoch"] for row in run.history] == [1.0, 2.0]
    for key in ("loss", "loss_infomax", "bright/loss_kd", "half/loss_infomin", "bright/test_acc"):
        assert key in run.history[-1]


def test_empty_task_list(teacher: TorchTeacher, data: ArrayDataset) -> None:
    with pytest.raises(EmptyTaskListError, match="at least one task"):
        factorize(
            teacher=teacher, train=data, tasks=[], factor_config=tiny_factor_config(), train_config=tiny_train_config()
        )


def test_unknown_output(teacher: TorchTeacher, data: ArrayDataset) -> None:
    with pytest.raises(UnknownOutputError, match=r"'colour'.*bright, half"):
        factorize(
            teacher=teacher,
            train=data,
            tasks=[TaskSpec(name="colour", output="colour")],
            factor_config=tiny_factor_config(),
            train_config=tiny_train_config(),
        )


def test_teacher_input_shape_must_fit_data(teacher: TorchTeacher) -> None:
    with pytest.raises(InputShapeError, match=r"\(1, 8, 8\).*\(1, 12, 12\)"):
        factorize(
            teacher=teacher,
            train=tiny_dataset(32, side=12),
            tasks=TASKS,
            factor_config=tiny_factor_config(),
            train_config=tiny_train_config(),
        )


def test_label_array_of_wrong_length() -> None:
    with pytest.raises(LabelError, match=r"'bright'.*5.*8 images"):
        ArrayDataset(
            x=np.zeros((8, 1, 4, 4), np.float32), labels={"bright": np.zeros(5, np.int64)}, classes={"bright": ["a"]}
        )


def test_bad_train_config_is_named() -> None:
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="adagrad")
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_json({"epochz": 3})


def test_the_ckn_can_start_from_the_teachers_backbone(teacher: TorchTeacher, tmp_path: Path) -> None:
    from kf_core.factor import FactorConfig, FactorNet, NetSpec
    from kf_core.teacher import TorchScriptTeacher, load_teacher, save_torchscript
    from kf_core.train import init_ckn_from_teacher
    from tests.factories import onnx_teacher_file

    backbone = teacher.net.backbone
    same = FactorConfig(ckn=NetSpec("mlp", {"hidden": [32, 32]}), tsn=NetSpec("mlp", {"hidden": [8]}), feature_dim=32)
    sizes = teacher.output_sizes
    model = FactorNet(input_shape=teacher.input_shape, tasks=TASKS, num_classes=sizes, config=same)
    assert not _same_weights(model.ckn, backbone)
    init_ckn_from_teacher(model, teacher)
    assert _same_weights(model.ckn, backbone)
    # a TorchScript file traced from a kf teacher keeps the backbone: the same weights come back from it
    reading = save_torchscript(teacher, tmp_path / "teacher.pt")
    script = TorchScriptTeacher(tmp_path / "teacher.pt", **reading)
    assert script.output_sizes == sizes and len(script.feature_dims) == len(teacher.feature_dims)
    state = script.backbone_state()
    assert state is not None and all(torch.equal(state[k], v) for k, v in backbone.state_dict().items())
    # another architecture, or a teacher without its modules: a clear refusal
    other = FactorNet(input_shape=teacher.input_shape, tasks=TASKS, num_classes=sizes, config=tiny_factor_config())
    with pytest.raises(ConfigError, match="architecture; they differ at"):
        init_ckn_from_teacher(other, teacher)
    onnx_teacher = load_teacher(onnx_teacher_file(tmp_path / "t.onnx", {"bright": 2, "half": 2}))
    with pytest.raises(ConfigError, match=r"OnnxTeacher.*ckn_init='random'"):
        init_ckn_from_teacher(model, onnx_teacher)
    with pytest.raises(ConfigError, match="ckn_init"):
        TrainConfig(ckn_init="pretrained")
