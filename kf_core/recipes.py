"""Recipes: named, JSON-serialisable configs of data, architectures and hyperparameters.

A recipe says everything needed to reproduce a factor set: the data (:class:`DataSpec`), how a demo teacher is
fitted, the factor architecture, the IMB training config and the tasks. Built-in recipes are below; users pass
their own as a JSON file with the same fields (``kf factorize --recipe my.json``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kf_core.data.spec import DataSpec
from kf_core.errors import ConfigError, UnknownRecipeError
from kf_core.factor import FactorConfig, NetSpec
from kf_core.loop import TrainConfig
from kf_core.tasks import TaskSpec

__all__ = ["Recipe", "TeacherRecipe", "get_recipe", "list_recipes"]


@dataclass(frozen=True)
class TeacherRecipe:
    """How ``kf teacher fit`` trains a demo teacher (users normally bring their own)."""

    backbone: NetSpec  # teacher architecture; one linear head per label column goes on top
    feature_dim: int | None  # width of the backbone output the heads read (None: the backbone's own)
    train: TrainConfig  # plain cross-entropy training; the IMB weights are unused here

    def to_json(self) -> dict[str, Any]:
        return {"backbone": self.backbone.to_json(), "feature_dim": self.feature_dim, "train": self.train.to_json()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TeacherRecipe:
        return cls(
            backbone=NetSpec.from_json(d["backbone"]),
            feature_dim=d.get("feature_dim"),
            train=TrainConfig.from_json(d.get("train") or {}),
        )


@dataclass(frozen=True)
class Recipe:
    """Everything that produces a factor set, in one JSON document."""

    name: str  # a short identifier, recorded with every run
    data: DataSpec  # dataset, subset and train/test split
    teacher: TeacherRecipe  # demo teacher (kf teacher fit)
    factor: FactorConfig  # CKN and TSN architectures, feature width d
    train: TrainConfig  # IMB factorization settings
    tasks: tuple[TaskSpec, ...] = field(default=())  # empty: one task per teacher output
    description: str = ""  # what the recipe is for, for humans

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "data": self.data.to_json(),
            "teacher": self.teacher.to_json(),
            "factor": self.factor.to_json(),
            "train": self.train.to_json(),
            "tasks": [t.to_json() for t in self.tasks],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Recipe:
        try:
            return cls(
                name=str(d["name"]),
                description=str(d.get("description", "")),
                data=DataSpec.from_json(d["data"]),
                teacher=TeacherRecipe.from_json(d["teacher"]),
                factor=FactorConfig.from_json(d["factor"]),
                train=TrainConfig.from_json(d.get("train") or {}),
                tasks=tuple(TaskSpec.from_json(t) for t in d.get("tasks") or ()),
            )
        except KeyError as e:
            raise ConfigError(f"recipe is missing the field {e.args[0]!r}") from None
        except TypeError as e:
            raise ConfigError(f"recipe field has the wrong type: {e}") from None

    def with_overrides(
        self, *, epochs: int | None = None, samples: int | None = None, seed: int | None = None
    ) -> Recipe:
        """The CLI's ``--epochs/--samples/--seed``: epochs and seed apply to both teacher and factor training;
        samples changes the data subset (the split and the subset seed stay the recipe's)."""
        r = self
        if samples is not None:
            r = dataclasses.replace(r, data=dataclasses.replace(r.data, samples=samples))
        for key, value in (("epochs", epochs), ("seed", seed)):
            if value is not None:
                t_train = TrainConfig.from_json({**r.teacher.train.to_json(), key: value})
                teacher = dataclasses.replace(r.teacher, train=t_train)
                r = dataclasses.replace(
                    r, teacher=teacher, train=TrainConfig.from_json({**r.train.to_json(), key: value})
                )
        return r


_DSPRITES_TASKS = ("shape", "scale", "orientation", "pos_x", "pos_y")

_BUILTIN: dict[str, Recipe] = {
    "dsprites": Recipe(
        name="dsprites",
        description=(
            "The paper's dSprites setting scaled to a 2-core CPU: SimpleConv64 teacher, CKN and Gaussian "
            "SimpleConv64 TSNs at width 0.5, all with BatchNorm (without it the small TSNs learn position too "
            "slowly: pos_x/pos_y 79-83 % instead of 97 %), logit-matching KD, five factor tasks."
        ),
        data=DataSpec(source="dsprites", samples=40_000, seed=42, test_fraction=0.3, split_seed=42),
        teacher=TeacherRecipe(
            backbone=NetSpec("simpleconv64", {"batchnorm": True}),
            feature_dim=64,
            train=TrainConfig(epochs=16, batch_size=128, lr=2e-3, weight_decay=1e-4, seed=0),
        ),
        factor=FactorConfig(
            ckn=NetSpec("simpleconv64", {"batchnorm": True}),
            tsn=NetSpec("gaussian_simpleconv64", {"width": 0.5, "batchnorm": True}),
            feature_dim=64,
        ),
        train=TrainConfig(
            epochs=12, batch_size=128, lr=2e-3, weight_decay=1e-4, kd="mse", lambda_kd=0.1, seed=0, eval_every=0
        ),
        tasks=tuple(TaskSpec(name=t, output=t) for t in _DSPRITES_TASKS),
    ),
    "digits": Recipe(
        name="digits",
        description=(
            "scikit-learn's 8x8 digits: an MLP teacher with one 10-way head, factorized into two class-group "
            "tasks (0-4, 5-9) that assemble into a combined 10-way classifier."
        ),
        data=DataSpec(source="digits", seed=0, test_fraction=0.3, split_seed=42),
        teacher=TeacherRecipe(
            backbone=NetSpec("mlp"),
            feature_dim=None,
            train=TrainConfig(epochs=30, batch_size=64, lr=1e-3, seed=0),
        ),
        factor=FactorConfig(ckn=NetSpec("mlp"), tsn=NetSpec("mlp", {"width": 0.25}), feature_dim=64),
        train=TrainConfig(epochs=60, batch_size=64, lr=1e-3, lambda_kd=1.0, seed=0, eval_every=5),
        tasks=(
            TaskSpec(name="low", output="digit", classes=(0, 1, 2, 3, 4)),
            TaskSpec(name="high", output="digit", classes=(5, 6, 7, 8, 9)),
        ),
    ),
    "tabular": Recipe(
        name="tabular",
        description=(
            "Vectors (N, D): scikit-learn's bundled breast-cancer table (30 standardised features), an MLP teacher "
            "with two heads (diagnosis, tertile of the mean radius), factorized into MLP CKN and TSNs. The recipe "
            "to start from for any tabular or embedding teacher: its networks take inputs of any shape."
        ),
        data=DataSpec(source="breast_cancer", seed=0, test_fraction=0.3, split_seed=42),
        teacher=TeacherRecipe(
            backbone=NetSpec("mlp", {"hidden": [64, 64]}),
            feature_dim=None,
            train=TrainConfig(epochs=60, batch_size=32, lr=1e-3, weight_decay=1e-4, seed=0),
        ),
        factor=FactorConfig(
            ckn=NetSpec("mlp", {"hidden": [128, 64]}), tsn=NetSpec("mlp", {"hidden": [32, 32]}), feature_dim=32
        ),
        train=TrainConfig(epochs=60, batch_size=32, lr=1e-3, weight_decay=1e-4, lambda_kd=1.0, seed=0, eval_every=0),
        tasks=(TaskSpec(name="diagnosis", output="diagnosis"), TaskSpec(name="radius", output="radius")),
    ),
}


def list_recipes() -> list[str]:
    return sorted(_BUILTIN)


def get_recipe(name_or_path: str | Path) -> Recipe:
    """A built-in recipe by name, or a recipe JSON file by path."""
    key = str(name_or_path)
    if key in _BUILTIN:
        return _BUILTIN[key]
    path = Path(key)
    if path.suffix == ".json" or path.exists():
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"recipe file {path} does not exist") from None
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"recipe file {path} is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"recipe file {path} must hold a JSON object")
        return Recipe.from_json(doc)
    raise UnknownRecipeError("recipe", key, list_recipes())
