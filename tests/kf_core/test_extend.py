"""Extending a factor set against its frozen CKN, and narrowing it: parts reused byte for byte, served outputs
equal to the factor networks."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from kf_core import get_recipe, load_parts, remove_tasks, run_extension, run_factorization
from kf_core.assemble import assemble
from kf_core.data.spec import load_split
from kf_core.errors import ConfigError
from kf_core.extend import ckn_features
from kf_core.ort import create_session
from kf_core.tasks import TaskSpec
from kf_core.train import fit_teacher


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    root = tmp_path_factory.mktemp("extend")
    recipe = get_recipe("digits").with_overrides(epochs=2)
    recipe = dataclasses.replace(
        recipe,
        tasks=(*recipe.tasks, TaskSpec(name="even", output="digit", classes=(0, 2, 4, 6, 8))),
    )
    split = load_split(recipe.data)
    teacher = fit_teacher(train=split.train, backbone=recipe.teacher.backbone, train_config=recipe.teacher.train)
    run_factorization(recipe, teacher, root / "base", task_names=["low"])
    new = [t for t in recipe.tasks if t.name in ("high", "even")]
    report = run_extension(recipe, teacher, root / "base" / "parts", root / "ext", tasks=new)
    return root / "base", root / "ext", (recipe, teacher, report)


def test_extension_reuses_ckn_and_old_parts_byte_for_byte(runs: tuple[Path, Path, object]) -> None:
    base, ext, (_, _, report) = runs
    old, new = load_parts(base / "parts", cache=False), load_parts(ext / "parts", cache=False)
    assert new.task_names == ["low", "high", "even"]
    assert new.manifest["ckn"]["sha256"] == old.manifest["ckn"]["sha256"] == _sha(ext / "parts" / "ckn.onnx")
    assert new.manifest["tasks"]["low"] == old.manifest["tasks"]["low"]
    assert report["assembly"]["old_tasks_bitwise"] is True  # type: ignore[index]
    for name in ("high", "even"):
        assert 0.0 <= report["tasks"][name]["factor_accuracy"] <= 1.0  # type: ignore[index]


def test_every_subset_of_the_extended_set_equals_the_factor_networks(runs: tuple[Path, Path, object]) -> None:
    base, ext, (recipe, _, _) = runs
    old, new = load_parts(base / "parts", cache=False), load_parts(ext / "parts", cache=False)
    x = load_split(recipe.data).test.images(slice(0, 64))  # type: ignore[attr-defined]
    z_c = ckn_features(old, x)
    # The factor networks one by one: each task part on the CKN's z_c (old parts from the base set).
    want = {}
    for name in new.task_names:
        model = new.tasks[name] if name not in old.tasks else old.tasks[name]
        want[name] = create_session(model).run(["logits"], {"x": x, "z_c": z_c})[0]
    for k in (1, 2, 3):
        for subset in itertools.combinations(new.task_names, k):
            got = create_session(assemble(new, list(subset))).run([f"logits_{n}" for n in subset], {"x": x})
            for name, have in zip(subset, got, strict=True):
                np.testing.assert_allclose(have, want[name], atol=1e-5, rtol=0)
    # The old task's served outputs are bitwise those of the base set.
    (before,) = create_session(assemble(old, ["low"])).run(["logits_low"], {"x": x})
    (after,) = create_session(assemble(new, ["low"])).run(["logits_low"], {"x": x})
    assert np.array_equal(before, after)


def test_extension_trains_only_new_tasks_and_refuses_clashes(runs: tuple[Path, Path, object], tmp_path: Path) -> None:
    base, _, (recipe, teacher, report) = runs
    history = report["history"]  # type: ignore[index]
    assert history and all(not k.startswith("low/") for k in history[-1])
    with pytest.raises(ConfigError, match="already has task"):
        run_extension(recipe, teacher, base / "parts", tmp_path / "x", tasks=[recipe.tasks[0]])  # type: ignore[attr-defined]
    assert torch.is_grad_enabled()


def test_remove_tasks_keeps_the_rest_byte_for_byte(runs: tuple[Path, Path, object], tmp_path: Path) -> None:
    _, ext, _ = runs
    manifest = remove_tasks(ext / "parts", tmp_path / "narrow", drop=["high"])
    narrow = load_parts(tmp_path / "narrow", cache=False)
    assert narrow.task_names == ["low", "even"]
    full = load_parts(ext / "parts", cache=False)
    assert manifest["ckn"] == full.manifest["ckn"]
    assert narrow.manifest["tasks"]["even"] == full.manifest["tasks"]["even"]
    with pytest.raises(ConfigError, match="no task"):
        remove_tasks(ext / "parts", tmp_path / "bad", drop=["nope"])
    with pytest.raises(ConfigError, match="empty"):
        remove_tasks(ext / "parts", tmp_path / "bad", drop=["low", "high", "even"])
