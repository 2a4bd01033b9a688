"""`kf evaluate` end to end on a tiny factorize run: report sections, plots, report.md, caching and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kf_core.accuracy import collect_features, factor_features
from kf_core.data.npz import save_npz
from kf_core.data.spec import DataSpec, load_split
from kf_core.errors import CheckpointError, ConfigError
from kf_core.evaluation.baseline import baseline_accuracy, load_baseline
from kf_core.evaluation.run import EvalConfig, run_evaluation
from kf_core.evaluation.transfer import default_held_out
from kf_core.factor import NetSpec
from kf_core.pipeline import run_factorization
from kf_core.recipes import Recipe, TeacherRecipe
from kf_core.tasks import TaskSpec
from kf_core.teacher import load_teacher, save_teacher
from tests.factories import tiny_dataset, tiny_factor_config, tiny_teacher, tiny_train_config

TASKS = (TaskSpec(name="bright", output="bright"), TaskSpec(name="half", output="half"))
CONFIG = EvalConfig(probe_train=150, probe_test=80, probe_max_iter=30)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run directory, teacher directory) of a factorization of the tiny two-task dataset."""
    root = tmp_path_factory.mktemp("evaluate")
    data = save_npz(tiny_dataset(320), root / "tiny.npz")
    recipe = Recipe(
        name="tiny",
        data=DataSpec(source="npz", path=str(data), test_fraction=0.3, split_seed=0),
        teacher=TeacherRecipe(
            backbone=NetSpec("mlp", {"hidden": [32, 32]}), feature_dim=None, train=tiny_train_config()
        ),
        factor=tiny_factor_config(),
        train=tiny_train_config(epochs=4),
        tasks=TASKS,
    )
    split = load_split(recipe.data)
    save_teacher(tiny_teacher(split.train, epochs=8), root / "teacher", onnx=False)
    run_factorization(recipe, load_teacher(root / "teacher"), root / "factor")
    return root / "factor", root / "teacher"


@pytest.fixture(scope="module")
def evaluated(run: tuple[Path, Path]) -> dict[str, Any]:
    run_dir, teacher = run
    return run_evaluation(run_dir, teacher=teacher, baseline=True, config=CONFIG)


@pytest.mark.usefixtures("evaluated")
def test_report_gains_every_section_as_plain_json(run: tuple[Path, Path]) -> None:
    on_disk = json.loads((run[0] / "report.json").read_text())
    for section in ("leakage", "disentanglement", "transfer", "baseline", "evaluation"):
        assert section in on_disk, section
    leak = on_disk["leakage"]
    assert leak["tasks"] == ["bright", "half"]
    assert len(leak["matrix"]) == 2 and all(len(row) == 2 for row in leak["matrix"])
    assert 0.0 <= leak["mean_off_diagonal"] <= 1.0 and 0.0 <= leak["mean_diagonal"] <= 1.0
    assert leak["mean_diagonal"] > 0.5  # each TSN keeps its own, easy task
    dis = on_disk["disentanglement"]
    assert dis["factors"] == ["bright", "half"] and dis["latent_dim"] == 2 * 16
    assert set(dis["dci"]) >= {"disentanglement", "completeness", "informativeness"}
    assert "mig" in dis["mig"]
    base = on_disk["baseline"]
    assert abs(base["parameters"] - base["factor_parameters"]) / base["factor_parameters"] < 0.1
    assert base["leakage"]["shared_representation"] is True
    assert set(base["tasks"]) == {"bright", "half"}
    assert on_disk["baseline"]["comparison"]["leakage_mean_off_diagonal"]["kf"] == leak["mean_off_diagonal"]
    # Strict JSON: no NaN or Infinity anywhere (the catalog stores it as is).
    json.loads((run[0] / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))


def test_transfer_probes_the_held_out_task_on_every_representation(evaluated: dict[str, Any]) -> None:
    tr = evaluated["transfer"]
    assert tr["held_out"] == "bright" and tr["factorized_tasks"] == ["half"]
    assert set(tr["features"]) == {"ckn", "ckn_stage", "teacher", "teacher_stage", "random_ckn", "random_ckn_stage"}
    assert tr["features"]["teacher"]["accuracy"] > 0.8  # the teacher was trained on 'bright'
    assert tr["ckn_minus_random_points"] == pytest.approx(
        100 * (tr["features"]["ckn"]["accuracy"] - tr["features"]["random_ckn"]["accuracy"])
    )
    assert tr["features"]["ckn_stage"]["dim"] == 32  # the MLP CKN's last hidden layer, wider than z_c


def test_baseline_accuracy_is_the_students_own(run: tuple[Path, Path], evaluated: dict[str, Any]) -> None:
    saved = run[0] / "baseline"
    base = load_baseline(saved, key=json.loads((saved / "baseline.json").read_text())["key"])
    assert base is not None
    recipe = Recipe.from_json(json.loads((run[0] / "recipe.json").read_text()))
    want = baseline_accuracy(base.model, load_split(recipe.data).test, list(TASKS))
    assert evaluated["baseline"]["tasks"] == {n: {"accuracy": pytest.approx(a)} for n, a in want.items()}


def test_plots_exist_and_report_md_links_them(run: tuple[Path, Path], evaluated: dict[str, Any]) -> None:
    plots = evaluated["evaluation"]["plots"]
    assert set(plots) == {"leakage", "accuracy", "disentanglement", "transfer", "training"}
    md = (run[0] / "report.md").read_text()
    for name in plots.values():
        png = run[0] / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in md, name
    assert "Leakage" in md and "MIG" in md and "Transfer" in md


def test_second_evaluation_reuses_the_trained_comparison_models(
    run: tuple[Path, Path], evaluated: dict[str, Any]
) -> None:
    assert evaluated["evaluation"]["train_seconds"] > 0
    again = run_evaluation(run[0], teacher=run[1], baseline=True, config=CONFIG)
    assert again["evaluation"]["train_seconds"] == 0
    assert again["leakage"]["matrix"] == evaluated["leakage"]["matrix"]  # seeded subsamples, deterministic probes
    assert again["baseline"]["tasks"] == evaluated["baseline"]["tasks"]


def test_evaluation_without_baseline_drops_a_stale_baseline_section(tmp_path: Path, run: tuple[Path, Path]) -> None:
    copy = tmp_path / "factor"
    shutil.copytree(run[0], copy)
    out = run_evaluation(copy, teacher=run[1], baseline=False, transfer=False, config=CONFIG)
    assert "baseline" not in out and "transfer" not in out
    assert set(out["evaluation"]["plots"]) == {"leakage", "accuracy", "disentanglement", "training"}


def test_errors_a_user_can_cause(tmp_path: Path, run: tuple[Path, Path]) -> None:
    run_dir, teacher = run
    with pytest.raises(ConfigError, match="--teacher"):
        run_evaluation(run_dir, transfer=False, config=CONFIG)  # the run does not record its teacher
    with pytest.raises(ConfigError, match="not a task"):
        run_evaluation(run_dir, teacher=teacher, held_out="nope", config=CONFIG)
    with pytest.raises(ConfigError, match="kf factorize"):
        run_evaluation(tmp_path, teacher=teacher, config=CONFIG)
    copy = tmp_path / "no_checkpoint"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoint.pt").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        run_evaluation(copy, teacher=teacher, config=CONFIG)


def test_default_held_out_task() -> None:
    assert default_held_out(["scale", "shape", "pos_x"]) == "shape"
    assert default_held_out(["low", "high"]) == "low"
    with pytest.raises(ConfigError):
        default_held_out(["only"])


def test_factor_features_are_the_tsn_means_and_the_ckn_output(run: tuple[Path, Path]) -> None:
    from kf_core.evaluation.run_dir import load_run_model

    data = tiny_dataset(40, seed=3)
    model, _ = load_run_model(run[0], input_shape=data.input_shape)
    index = np.array([3, 7, 11])
    z_c, mu = factor_features(model, data, index)
    x = torch.from_numpy(data.images(index))
    with torch.no_grad():
        assert np.allclose(z_c, model.ckn(x).numpy(), atol=1e-5)
        assert np.allclose(mu["half"], model.encode_task("half", x)[0].numpy(), atol=1e-5)
    out = collect_features(lambda t: {"sum": t.flatten(1).sum(1, keepdim=True)}, data, index, batch=2)
    assert out["sum"].shape == (3, 1)


def test_cli_subcommand_parses_runs_and_prints_a_summary(
    tmp_path: Path, run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from service.cli.evaluate import add_evaluate_command, cmd_evaluate

    copy = tmp_path / "factor"
    shutil.copytree(run[0], copy)
    parser = argparse.ArgumentParser(prog="kf")
    add_evaluate_command(parser.add_subparsers(dest="command"))
    argv = ["evaluate", str(copy), "--teacher", str(run[1]), "--no-transfer", "--probe-samples", "60"]
    assert cmd_evaluate(parser.parse_args(argv)) == 0
    out = capsys.readouterr().out
    assert "off-diag" in out and "KF" in out and "report.md" in out
    report = json.loads((copy / "report.json").read_text())
    assert report["evaluation"]["probe_samples"]["train"] == 60
    with pytest.raises(ConfigError, match="--threads"):
        cmd_evaluate(parser.parse_args([*argv, "--threads", "-1"]))


def test_an_interrupted_comparison_model_resumes_only_for_the_same_key(tmp_path: Path) -> None:
    from kf_core.evaluation.context import claim_cache

    claim_cache(tmp_path, "teacher-a")
    (tmp_path / "checkpoint.pt").write_bytes(b"half-trained")
    claim_cache(tmp_path, "teacher-a")
    assert (tmp_path / "checkpoint.pt").exists()  # same teacher, data and recipe: resume
    claim_cache(tmp_path, "teacher-b")
    assert not (tmp_path / "checkpoint.pt").exists()  # another teacher: start over
