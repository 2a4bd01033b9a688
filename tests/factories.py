"""Plain factory functions for tests: tiny datasets and teachers that train in a second or two."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kf_core.data.base import ArrayDataset
from kf_core.factor import FactorConfig, NetSpec
from kf_core.loop import TrainConfig
from kf_core.teacher import TorchTeacher
from kf_core.train import fit_teacher


def tiny_dataset(n: int = 96, *, seed: int = 0, side: int = 8) -> ArrayDataset:
    """Two label columns that are easy to learn from the pixels: ``bright`` (3 classes) and ``half`` (2)."""
    rng = np.random.default_rng(seed)
    bright = rng.integers(0, 3, n)
    half = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 1, side, side)).astype(np.float32)
    x += bright[:, None, None, None].astype(np.float32)
    x[half == 1, :, :, : side // 2] += 1.5
    return ArrayDataset(
        x=x,
        labels={"bright": bright, "half": half},
        classes={"bright": ["dark", "mid", "light"], "half": ["no", "yes"]},
        name="tiny",
    )


def tiny_train_config(**overrides: object) -> TrainConfig:
    base: dict[str, object] = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "seed": 0, "eval_every": 0}
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


def tiny_factor_config() -> FactorConfig:
    return FactorConfig(ckn=NetSpec("mlp", {"hidden": [32, 32]}), tsn=NetSpec("mlp", {"hidden": [8]}), feature_dim=16)


def tiny_teacher(data: ArrayDataset | None = None, *, epochs: int = 3) -> TorchTeacher:
    data = data or tiny_dataset()
    return fit_teacher(
        train=data,
        backbone=NetSpec("mlp", {"hidden": [32, 32]}),
        train_config=tiny_train_config(epochs=epochs),
    )


# --- service factories: teacher files, specs, datasets and job requests for tests/service ---

DSPRITES_HEADS = {"shape": 3, "scale": 6, "orientation": 40, "pos_x": 32, "pos_y": 32}


def teacher_net(heads: dict[str, int], *, input_shape: tuple[int, ...] = (1, 8, 8), hidden: int = 16) -> Any:
    """An untrained MLP teacher (a ``MultiHeadNet``): factorization needs a teacher's outputs, not its accuracy."""
    from kf_core.teacher import MultiHeadNet

    torch.manual_seed(0)
    backbone = NetSpec("mlp", {"hidden": [hidden]}).build(input_shape=input_shape, feature_dim=None)
    return MultiHeadNet(backbone, heads).eval()


def onnx_teacher_file(
    path: Path, heads: dict[str, int], *, input_shape: tuple[int, ...] = (1, 8, 8), names: list[str] | None = None
) -> Path:
    """An ONNX teacher with one output per head (named after it, or ``names``) and one ``feat_0`` feature output."""
    from kf_core.export import export_module

    net = teacher_net(heads, input_shape=input_shape)
    outputs = names or [*heads, "feat_0"]
    export_module(net, (torch.zeros(2, *input_shape),), path, input_names=["x"], output_names=outputs)
    return path


def torchscript_teacher_file(path: Path, heads: dict[str, int], *, input_shape: tuple[int, ...] = (1, 8, 8)) -> Path:
    """A TorchScript teacher returning a tuple: the heads in order, then one stage feature."""
    net = teacher_net(heads, input_shape=input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript; users still bring it
        traced = torch.jit.trace(net, torch.zeros(2, *input_shape))
        torch.jit.save(traced, str(path))
    return path


def npz_dataset_file(path: Path, *, n: int = 96, side: int = 8) -> Path:
    """``tiny_dataset`` as an uploadable ``.npz`` (1 x side x side images, label arrays ``bright`` and ``half``)."""
    ds = tiny_dataset(n, side=side)
    np.savez(path, x=ds.x, bright=ds.labels["bright"], half=ds.labels["half"])
    return path


def tiny_job_body(teacher_id: str, **overrides: Any) -> dict[str, Any]:
    """A digits job that trains in about a second: small MLPs, few samples, one epoch."""
    body: dict[str, Any] = {
        "teacher_id": teacher_id,
        "dataset": "digits",
        "overrides": {
            "epochs": 1,
            "samples": 200,
            "train": {"batch_size": 32, "eval_every": 0},
            "factor": {
                "ckn": {"name": "mlp", "kwargs": {"hidden": [16]}},
                "tsn": {"name": "mlp", "kwargs": {"hidden": [8]}},
                "feature_dim": 8,
            },
        },
    }
    body.update(overrides)
    return body


def exported_run_dir(run_dir: Path) -> dict[str, Any]:
    """A run directory as ``run_factorization`` leaves it (``parts/`` and ``report.json``) for an untrained
    two-task digits factor network; returns the report."""
    import json

    from kf_core.export import export_factor_set
    from kf_core.factor import FactorNet
    from kf_core.tasks import TaskSpec

    torch.manual_seed(0)
    tasks = [TaskSpec("low", "digit", (0, 1, 2, 3, 4)), TaskSpec("high", "digit", (5, 6, 7, 8, 9))]
    net = FactorNet(
        input_shape=(1, 8, 8),
        tasks=tasks,
        num_classes={"low": 5, "high": 5},
        config=FactorConfig(ckn=NetSpec("mlp", {"hidden": [8]}), tsn=NetSpec("mlp", {"hidden": [4]}), feature_dim=4),
    ).eval()
    export_factor_set(net, run_dir / "parts", sample=torch.zeros(4, 1, 8, 8), output_sizes={"digit": 10})
    task_metrics = {"teacher_accuracy": 0.9, "factor_accuracy": 0.8, "gap_points": 10.0}
    report = {"recipe": "digits", "tasks": {t.name: dict(task_metrics) for t in tasks}, "history": []}
    (run_dir / "report.json").write_text(json.dumps(report))
    return report


def make_keys(session: Any) -> dict[str, str]:
    """An admin key ("ops") and a predict key ("app") in the catalog (committed), by scope: their plaintexts."""
    from service.catalog.keys import create_key

    _, admin = create_key(session=session, scope="admin", name="ops")
    _, predict = create_key(session=session, scope="predict", name="app")
    session.commit()
    return {"admin": admin, "predict": predict}


def bearer(key: str) -> dict[str, str]:
    """The request header that presents ``key``."""
    return {"Authorization": f"Bearer {key}"}


def queued_job(session: Any, *, teacher_id: Any, dataset_id: Any, recipe: dict[str, Any] | None = None) -> Any:
    """A queued one-epoch job for factor set ``fs`` in the catalog (committed), as a worker would find it."""
    from service.catalog import queries as catalog

    job = catalog.create_job(
        session=session,
        teacher_id=teacher_id,
        dataset_id=dataset_id,
        recipe=recipe or {},
        factor_set_name="fs",
        queue="kf",
        max_attempts=2,
        epochs=1,
    )
    session.commit()
    return job


@dataclass
class SklearnDigits:
    """A scikit-learn MLP on the bundled digits, converted with skl2onnx as a user would, and its data.

    ``x_*`` are the 64 pixel intensities scaled to [0, 1], shape (N, 64) float32; the teacher was fitted on the
    train part only, so ``accuracy`` (sklearn's own, on the test part) is on data it never saw.
    """

    path: Path
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    accuracy: float


def sklearn_digits_teacher(path: Path, *, zipmap: bool = False) -> SklearnDigits:
    """Fit ``MLPClassifier`` on 70 % of sklearn's digits and write it to ``path`` with ``skl2onnx.to_onnx``:
    input ``X`` [N, 64] float, outputs ``label`` (int64) and ``probabilities`` (a tensor, or with ``zipmap``
    skl2onnx's default ZipMap: ``output_label`` and ``output_probability``, a sequence of maps)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    # One BLAS thread: the fit is small, and spinning threads make it crawl on a busy machine.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # ConvergenceWarning: a short fit is enough here
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0).fit(x_train, y_train)
    options = None if zipmap else {id(clf): {"zipmap": False}}
    path.write_bytes(to_onnx(clf, x_train[:1], options=options).SerializeToString())
    return SklearnDigits(
        path=path,
        x_train=x_train,
        y_train=y_train.astype(np.int64),
        x_test=x_test,
        y_test=y_test.astype(np.int64),
        accuracy=float(clf.score(x_test, y_test)),
    )
