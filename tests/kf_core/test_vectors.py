"""Inputs of any rank (issue 12): vector teachers from converters, vector data in npz and tables, MLP recipes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from kf_core import check_input_shape, get_recipe, load_table, run_factorization, run_teacher_fit
from kf_core.data import load_npz
from kf_core.errors import ConfigError, DataError, InputShapeError
from kf_core.factor import FactorConfig, FactorNet, NetSpec
from kf_core.tasks import TaskSpec
from kf_core.teacher import PROBABILITY_EPS, OnnxTeacher, load_teacher
from tests.factories import sklearn_digits_teacher


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These MLPs are too small to gain from intra-op threads, and on a busy machine spinning threads slow them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("zipmap", "output", "label"), [(False, "probabilities", "label"), (True, "output_probability", "output_label")]
)
def test_skl2onnx_teacher_loads_unmodified(tmp_path: Path, zipmap: bool, output: str, label: str) -> None:
    sk = sklearn_digits_teacher(tmp_path / "digits.onnx", zipmap=zipmap)
    teacher = load_teacher(sk.path)
    assert isinstance(teacher, OnnxTeacher)
    assert teacher.input_shape == (64,)
    assert teacher.output_sizes == {output: 10}  # the int64 label output is a prediction, not a task
    assert teacher.probability_outputs == {output}
    logits = teacher(torch.from_numpy(sk.x_test)).logits[output]
    # Read as log-probabilities log(p + eps): at most log(1 + eps), one softmax, argmax is sklearn's prediction.
    assert bool((logits <= np.log1p(PROBABILITY_EPS) + 1e-6).all()) and bool((logits >= np.log(PROBABILITY_EPS)).all())
    torch.testing.assert_close(torch.softmax(logits, 1).sum(1), torch.ones(len(logits)))
    accuracy = float((logits.argmax(1).numpy() == sk.y_test).mean())
    assert accuracy == pytest.approx(sk.accuracy, abs=1e-9)
    teacher.check_input((64,))
    with pytest.raises(InputShapeError, match=r"takes inputs of shape \(64,\) .* but the data has \(1, 8, 8\)"):
        teacher.check_input((1, 8, 8))
    with pytest.raises(ConfigError, match=f"ONNX output '{label}' holds int64 values, not per-class scores"):
        load_teacher(sk.path, outputs={"digit": label})


def test_check_input_shape_is_rank_generic() -> None:
    check_input_shape((64,), (64,))
    check_input_shape((3, -1, -1), (3, 32, 40))  # free dims fit any size
    check_input_shape([None, 10], [7, 10])
    with pytest.raises(InputShapeError, match=r"\(64,\) \(a vector\) per sample \(1 dims\) .* \(1, 8, 8\)"):
        check_input_shape((64,), (1, 8, 8))
    with pytest.raises(InputShapeError, match=r"factor set fs:1 takes inputs of shape \(30,\)"):
        check_input_shape((30,), (31,), what="factor set fs:1")


def test_npz_takes_vectors_of_any_width(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(20, 7)).astype(np.float32)
    np.savez(tmp_path / "v.npz", x=x, probabilities=np.arange(20) % 3)
    ds = load_npz(tmp_path / "v.npz")
    assert ds.input_shape == (7,)
    np.testing.assert_array_equal(ds.images(), x)
    np.savez(tmp_path / "seq.npz", x=np.zeros((4, 2, 3, 5, 6), np.uint8), y=np.zeros(4, np.int64))
    assert load_npz(tmp_path / "seq.npz").input_shape == (2, 3, 5, 6)


def test_conv_nets_refuse_vectors_and_mlp_takes_them() -> None:
    with pytest.raises(
        ConfigError, match=r"'simpleconv64' takes images .* use an architecture for vectors such as 'mlp'"
    ):
        NetSpec("simpleconv64").build(input_shape=(30,), feature_dim=8)
    config = FactorConfig(ckn=NetSpec("mlp", {"hidden": [16]}), tsn=NetSpec("mlp", {"hidden": [8]}), feature_dim=8)
    net = FactorNet(input_shape=(30,), tasks=[TaskSpec("a", "a")], num_classes={"a": 3}, config=config)
    assert net(torch.zeros(5, 30))["a"].shape == (5, 3)


def _table_columns() -> dict[str, list[object]]:
    rng = np.random.default_rng(1)
    return {
        "f1": rng.normal(size=6).round(3).tolist(),
        "kind": ["b", "a", "b", "c", "a", "a"],
        "f2": list(range(6)),
        "grade": [0, 2, 1, 2, 0, 1],
    }


def _write_csv(path: Path, columns: dict[str, list[object]]) -> Path:
    rows = [",".join(columns)] + [",".join(str(v[i]) for v in columns.values()) for i in range(6)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_csv_and_parquet_tables_give_vectors_and_labels(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = _table_columns()
    csv_path = _write_csv(tmp_path / "t.csv", columns)
    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    for path in (csv_path, tmp_path / "t.parquet"):
        ds = load_table(path, labels=["kind", "grade"])
        assert ds.input_shape == (2,)
        np.testing.assert_allclose(ds.images()[:, 0], np.asarray(columns["f1"], dtype=np.float64), rtol=1e-6)
        np.testing.assert_array_equal(ds.images()[:, 1], np.arange(6))
        assert ds.classes == {"kind": ["a", "b", "c"], "grade": ["0", "1", "2"]}
        np.testing.assert_array_equal(ds.labels["kind"], [1, 0, 1, 2, 0, 0])
        np.testing.assert_array_equal(ds.labels["grade"], columns["grade"])


@pytest.mark.parametrize(
    ("text", "labels", "message"),
    [
        ("f1,y\n1,0\n2,1\n", ["z"], r"no column\(s\) \['z'\] to use as labels; its columns: \['f1', 'y'\]"),
        ("f1,y\nabc,0\n2,1\n", ["y"], "feature column 'f1' holds 'abc', which is not a number"),
        ("f1,y\n,0\n2,1\n", ["y"], "feature column 'f1' has missing or infinite values"),
        ("f1,y\n1,0\n2\n", ["y"], "CSV line 3 has 1 fields but the header has 2"),
        ("y\n0\n1\n", ["y"], "no feature columns besides the label columns"),
        ("f1,y\n", ["y"], "table has no rows"),
        ("", ["y"], "the CSV file is empty"),
        ("f1,y\n1,0\n", [], "a table needs 'labels'"),
    ],
)
def test_bad_tables_say_what_to_fix(tmp_path: Path, text: str, labels: list[str], message: str) -> None:
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        load_table(tmp_path / "bad.csv", labels=labels)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="the Parquet file cannot be read"):
        load_table(tmp_path / "bad.parquet", labels=["y"])


def test_tabular_recipe_factor_networks_match_a_multi_output_vector_teacher(tmp_path: Path) -> None:
    """Acceptance 2 of issue 12: a torch teacher with two outputs on sklearn's breast-cancer table, exported to
    ONNX with a (N, 30) input, factorizes with every factor network within 1.5 points of the teacher."""
    recipe = get_recipe("tabular")
    run_teacher_fit(recipe, tmp_path / "teacher")
    teacher = load_teacher(tmp_path / "teacher" / "teacher.onnx")
    assert teacher.input_shape == (30,) and teacher.output_sizes == {"diagnosis": 2, "radius": 3}
    report = run_factorization(recipe, teacher, tmp_path / "run")
    gaps = {name: row["gap_points"] for name, row in report["tasks"].items()}
    assert set(gaps) == {"diagnosis", "radius"}
    assert all(gap <= 1.5 for gap in gaps.values()), report["tasks"]
    assert report["assembly"]["max_abs_diff"] < 1e-3
