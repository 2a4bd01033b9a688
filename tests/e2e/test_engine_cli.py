"""The engine CLI end to end on a small digits recipe: fit, factorize, assemble, predict, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kf_core.data.spec import load_split
from kf_core.recipes import get_recipe
from service.cli import main

RUN = ["--recipe", "digits", "--epochs", "3", "--samples", "600"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    assert main(["teacher", "fit", *RUN, "--out", str(root / "teacher")]) == 0
    assert main(["factorize", "--teacher", str(root / "teacher"), *RUN, "--out", str(root / "factor")]) == 0
    return root


def test_factorize_writes_a_complete_report(runs: Path) -> None:
    report = json.loads((runs / "factor" / "report.json").read_text())
    assert set(report["tasks"]) == {"low", "high"}
    for row in report["tasks"].values():
        assert 0.0 <= row["factor_accuracy"] <= 1.0 and 0.0 <= row["teacher_accuracy"] <= 1.0
    assert report["assembly"]["max_abs_diff"] <= 1e-5
    assert report["assembly"]["combined"]["classes"] == list(range(10))
    assert report["wall_seconds"] > 0
    assert report["teacher"] == {"path": str((runs / "teacher").resolve())}
    for name in ("accuracy.png", "curves.png", "recipe.json", "parts/manifest.json"):
        assert (runs / "factor" / name).stat().st_size > 0


def test_assemble_and_predict(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "both.onnx"
    assert main(["assemble", str(runs / "factor"), "--tasks", "low,high", "--combined", "--out", str(model)]) == 0
    test = load_split(get_recipe("digits").with_overrides(samples=600).data).test
    batch = tmp_path / "batch.npy"
    np.save(batch, test.images(slice(0, 5)))
    capsys.readouterr()
    assert main(["predict", str(model), "--input", str(batch)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"low", "high", "combined"}
    assert len(out["combined"]["labels"]) == 5
    assert all(abs(sum(p) - 1) < 1e-5 for p in out["combined"]["probabilities"])
    assert set(out["combined"]["class_names"]) <= {str(d) for d in range(10)}


def test_bad_input_exits_2_with_a_message(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["assemble", str(runs / "factor"), "--tasks", "low,mid", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "unknown task 'mid'" in capsys.readouterr().err
    argv = ["factorize", "--teacher", str(runs / "teacher"), *RUN, "--tasks", "nope", "--out", str(tmp_path / "f")]
    assert main(argv) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    model = tmp_path / "low.onnx"
    assert main(["assemble", str(runs / "factor"), "--tasks", "low", "--out", str(model)]) == 0
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 1, 9, 9), np.float32))
    assert main(["predict", str(model), "--input", str(wrong)]) == 2
    assert "shape (N, 1, 8, 8)" in capsys.readouterr().err
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((1, 1, 8, 8), np.nan, np.float32))
    assert main(["predict", str(model), "--input", str(nan)]) == 2
    assert "NaN" in capsys.readouterr().err


def test_demo_runs_the_whole_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "demo",
        "--engine",
        "--recipe",
        "digits",
        "--epochs",
        "1",
        "--samples",
        "300",
        "--out",
        str(tmp_path / "demo"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "assembly low (built in" in out and "assembly low+high (built in" in out
    assert "predicted" in out and "truth" in out
    assert (tmp_path / "demo" / "factor" / "parts" / "manifest.json").exists()


def test_demo_budget_applies_only_without_overrides() -> None:
    from kf_core.engine_demo import DEMO_BUDGET, demo_recipe

    small = demo_recipe("dsprites", epochs=None, samples=None, seed=None)
    assert small.data.samples == DEMO_BUDGET["dsprites"]["samples"]
    assert small.train.epochs == DEMO_BUDGET["dsprites"]["epochs"]
    assert small.teacher.train.epochs == DEMO_BUDGET["dsprites"]["teacher_epochs"]
    mine = demo_recipe("dsprites", epochs=9, samples=123, seed=None)
    assert (mine.data.samples, mine.train.epochs) == (123, 9)
