"""Recipes: built-ins, JSON files, overrides and the errors users can cause."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kf_core.errors import ConfigError, UnknownRecipeError
from kf_core.recipes import Recipe, get_recipe, list_recipes


@pytest.mark.parametrize("name", list_recipes())
def test_builtin_recipes_round_trip_through_json(name: str, tmp_path: Path) -> None:
    recipe = get_recipe(name)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe.to_json()))
    assert get_recipe(path) == recipe
    assert Recipe.from_json(json.loads(path.read_text())).to_json() == recipe.to_json()


def test_overrides_apply_to_teacher_and_factor_runs() -> None:
    r = get_recipe("dsprites").with_overrides(epochs=2, samples=500, seed=7)
    assert (r.train.epochs, r.teacher.train.epochs) == (2, 2)
    assert (r.train.seed, r.teacher.train.seed) == (7, 7)
    assert r.data.samples == 500
    assert r.data.seed == get_recipe("dsprites").data.seed  # the data subset stays the recipe's


def test_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(UnknownRecipeError, match=r"'cifar'.*digits, dsprites"):
        get_recipe("cifar")


def test_bad_recipe_files_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        get_recipe(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        get_recipe(tmp_path / "broken.json")
    doc = get_recipe("digits").to_json()
    del doc["factor"]
    (tmp_path / "partial.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="missing the field 'factor'"):
        get_recipe(tmp_path / "partial.json")
    doc = get_recipe("digits").to_json()
    doc["train"]["learning_rate"] = 0.1
    (tmp_path / "typo.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="learning_rate"):
        get_recipe(tmp_path / "typo.json")
