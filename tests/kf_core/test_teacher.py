"""Teachers from the three sources, the output mapping, and the files that must be refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import onnx
import pytest
import torch

from kf_core.errors import InputShapeError, ModelFileError, UnknownOutputError
from kf_core.export import export_module
from kf_core.tasks import TaskSpec
from kf_core.teacher import OnnxTeacher, TorchScriptTeacher, TorchTeacher, load_teacher, save_teacher
from kf_core.train import factorize
from tests.factories import tiny_dataset, tiny_factor_config, tiny_teacher, tiny_train_config


@pytest.fixture(scope="module")
def teacher() -> TorchTeacher:
    return tiny_teacher(epochs=2)


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.from_numpy(tiny_dataset(10, seed=3).images())


def _assert_same_outputs(a: TorchTeacher, b: object, x: torch.Tensor) -> None:
    out_a, out_b = a(x), b(x)  # type: ignore[operator]
    assert out_a.logits.keys() == out_b.logits.keys()
    for k in out_a.logits:
        torch.testing.assert_close(out_a.logits[k], out_b.logits[k], atol=1e-5, rtol=1e-5)
    assert len(out_a.features) == len(out_b.features) > 0
    for fa, fb in zip(out_a.features, out_b.features, strict=True):
        torch.testing.assert_close(fa, fb, atol=1e-5, rtol=1e-5)


def test_saved_teacher_round_trips(teacher: TorchTeacher, tmp_path: Path, x: torch.Tensor) -> None:
    save_teacher(teacher, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"teacher.json", "teacher.safetensors", "teacher.onnx"}
    loaded = load_teacher(tmp_path)
    assert isinstance(loaded, TorchTeacher)
    assert loaded.output_sizes == {"bright": 3, "half": 2}
    _assert_same_outputs(teacher, loaded, x)
    # The ONNX file save_teacher writes is itself a usable teacher, features found by their feat_ names.
    _assert_same_outputs(teacher, load_teacher(tmp_path / "teacher.onnx"), x)


def _export_with_names(teacher: TorchTeacher, path: Path, names: list[str]) -> Path:
    export_module(teacher.net, (torch.zeros(2, 1, 8, 8),), path, input_names=["pixels"], output_names=names)
    return path


def test_onnx_teacher_with_arbitrary_output_names_factorizes(
    teacher: TorchTeacher, tmp_path: Path, x: torch.Tensor
) -> None:
    path = _export_with_names(teacher, tmp_path / "t.onnx", ["head_17", "zz_out", "h_a", "h_b"])
    onnx_teacher = load_teacher(path, outputs={"bright": "head_17", "half": "zz_out"}, features=["h_a", "h_b"])
    assert isinstance(onnx_teacher, OnnxTeacher)
    assert onnx_teacher.output_sizes == {"bright": 3, "half": 2}
    assert onnx_teacher.feature_dims == (32, 32)
    _assert_same_outputs(teacher, onnx_teacher, x)
    run = factorize(
        teacher=onnx_teacher,
        train=tiny_dataset(48),
        tasks=[TaskSpec(name="bright", output="bright"), TaskSpec(name="half", output="half")],
        factor_config=tiny_factor_config(),
        train_config=tiny_train_config(epochs=1),
    )
    assert run.model.task_names == ["bright", "half"]
    assert run.history and run.history[-1]["loss"] == run.history[-1]["loss"]  # finite, not NaN


def test_onnx_mapping_to_missing_output_lists_the_real_ones(teacher: TorchTeacher, tmp_path: Path) -> None:
    path = _export_with_names(teacher, tmp_path / "t.onnx", ["a", "b", "c", "d"])
    with pytest.raises(UnknownOutputError, match=r"'shape'.*a, b, c, d"):
        load_teacher(path, outputs={"bright": "shape"}, features=[])


def test_onnx_teacher_input_shape_is_checked(teacher: TorchTeacher, tmp_path: Path) -> None:
    t = load_teacher(_export_with_names(teacher, tmp_path / "t.onnx", ["a", "b", "c", "d"]))
    t.check_input((1, 8, 8))
    with pytest.raises(InputShapeError, match=r"\(1, 8, 8\).*\(3, 32, 32\)"):
        t.check_input((3, 32, 32))


def test_non_onnx_and_invalid_onnx_files_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not a protobuf \xff" * 10)
    with pytest.raises(ModelFileError, match=r"junk\.onnx"):
        load_teacher(junk)
    bad = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["missing_input"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
        )
    )
    (tmp_path / "bad.onnx").write_bytes(bad.SerializeToString())
    with pytest.raises(ModelFileError, match=r"bad\.onnx"):
        load_teacher(tmp_path / "bad.onnx")


def test_torchscript_teacher(teacher: TorchTeacher, tmp_path: Path, x: torch.Tensor) -> None:
    traced = torch.jit.trace(teacher.net, torch.zeros(2, 1, 8, 8))
    path = tmp_path / "teacher.pt"
    traced.save(str(path))
    ts = load_teacher(path, outputs={"bright": 0, "half": 1}, features=[2, 3], input_shape=(1, 8, 8))  # type: ignore[dict-item]
    assert isinstance(ts, TorchScriptTeacher)
    _assert_same_outputs(teacher, ts, x)
    with pytest.raises(UnknownOutputError, match="TorchScript output"):
        TorchScriptTeacher(path, input_shape=(1, 8, 8), outputs={"bright": 7})


def test_pickle_disguised_as_torchscript_is_refused_unread(tmp_path: Path) -> None:
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelFileError, match="not a TorchScript archive"):
        load_teacher(evil, outputs={"a": "0"}, input_shape=(1, 8, 8))


def test_teacher_directory_without_spec(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"teacher\.json"):
        load_teacher(tmp_path)
