"""``kf evaluate RUN_DIR``: prove a factorization: leakage, MIG/DCI, transfer and the multi-task baseline.

Reads a run directory written by :func:`kf_core.pipeline.run_factorization` (``recipe.json``, ``report.json``,
``checkpoint.pt``), measures, and adds to ``report.json`` the sections ``leakage``, ``disentanglement``,
``transfer``, ``baseline`` (with ``--baseline``) and ``evaluation``; writes ``leakage.png``,
``accuracy.png``, ``disentanglement.png``, ``transfer.png``, ``training.png`` and ``report.md``.

Two comparisons need models of their own, trained with the run's recipe, data, budget and seed and cached
in the run directory, so a second evaluation only measures: the multi-task KD student (``baseline/``,
:mod:`kf_core.evaluation.baseline`) and the factor set without the held-out task (``transfer/``,
:mod:`kf_core.evaluation.transfer`).
Their training time is reported apart from the evaluation time.

Probes and metrics are fitted on a seeded subsample of ``probe_train`` training images and scored on
``probe_test`` test images (5,000 each by default: over 100 examples per class for the 40-class orientation
task), which bounds the evaluation time whatever the dataset size; accuracies use the whole test split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kf_core.accuracy import collect_features, factor_features
from kf_core.data.spec import load_split
from kf_core.errors import ConfigError
from kf_core.evaluation.baseline import factor_parameters, load_baseline, save_baseline, train_baseline
from kf_core.evaluation.context import EvalConfig, EvalContext, claim_cache, fast, make_context
from kf_core.evaluation.disentangle import dci, mig
from kf_core.evaluation.leakage import leakage_matrix
from kf_core.evaluation.report_md import write_evaluation_plots, write_report_md
from kf_core.evaluation.run_dir import load_run_model, read_json, resolve_teacher
from kf_core.evaluation.transfer import (
    default_held_out,
    fit_transfer_factors,
    random_ckn,
    teacher_feature_fn,
    transfer_probe,
)
from kf_core.factor import FactorNet
from kf_core.loop import Callback, fingerprint
from kf_core.nets.base import Backbone
from kf_core.recipes import Recipe
from kf_core.report import write_json
from kf_core.tasks import task_labels
from kf_core.teacher import MultiHeadNet, Teacher

__all__ = ["EvalConfig", "run_evaluation"]


def _disentanglement(ctx: EvalContext, train_z: np.ndarray, test_z: np.ndarray, what: str) -> dict[str, Any]:
    cfg = ctx.cfg
    m = mig(test_z, ctx.f_te, bins=cfg.mig_bins)
    d = dci(train_z, ctx.f_tr, test_z, ctx.f_te, alpha=cfg.dci_alpha, max_iter=cfg.probe_max_iter)
    d.pop("importance")  # latents x factors: too bulky for a catalog row
    return {"factors": ctx.columns, "latents": what, "latent_dim": int(train_z.shape[1]), "mig": m, "dci": d}


def _factor_sections(ctx: EvalContext, model: FactorNet) -> dict[str, Any]:
    """KF: leakage between the TSN means, MIG/DCI on their concatenation."""
    with ctx.stage("KF features"):
        _, mu_tr = factor_features(model, ctx.split.train, ctx.itr, device=ctx.device)
        _, mu_te = factor_features(model, ctx.split.test, ctx.ite, device=ctx.device)
    with ctx.stage("KF leakage"):
        leak = leakage_matrix(mu_tr, ctx.y_tr, mu_te, ctx.y_te, **ctx.probes())
        leak["features"] = "mu_i, the mean of TSN_i (its output for a deterministic TSN)"
    with ctx.stage("KF MIG/DCI"):
        z_tr, z_te = (np.concatenate([m[t.name] for t in ctx.tasks], axis=1) for m in (mu_tr, mu_te))
        dis = _disentanglement(ctx, z_tr, z_te, "every task's mu_i, concatenated in task order")
    return {"leakage": leak, "disentanglement": dis}


def _baseline_section(ctx: EvalContext, model: FactorNet, kf_leak: Mapping[str, Any]) -> dict[str, Any]:
    """The multi-task KD student: trained (or loaded from baseline/), then the same measurements."""
    key = fingerprint("baseline/1", [t.to_json() for t in ctx.tasks], ctx.recipe.factor.to_json(), ctx.key)
    base = load_baseline(ctx.out / "baseline", key=key)
    if base is None:
        claim_cache(ctx.out / "baseline", key)
        ctx.say("training the multi-task KD baseline (same data, budget and seed; cached in baseline/)")
        base = train_baseline(
            teacher=ctx.teacher,
            train=ctx.split.train,
            tasks=ctx.tasks,
            ckn=ctx.recipe.factor.ckn,
            feature_dim=ctx.recipe.factor.feature_dim,
            target_parameters=factor_parameters(model),
            train_config=ctx.recipe.train,
            callbacks=ctx.callbacks("baseline"),
            checkpoint=ctx.out / "baseline" / "checkpoint.pt",
            eval_data=ctx.split.test,
        )
        save_baseline(base, ctx.out / "baseline", key=key)
        (ctx.out / "baseline" / "checkpoint.pt").unlink(missing_ok=True)  # the saved weights supersede it
        ctx.trained["baseline"] = base.wall_seconds
    net = fast(base.model, ctx.device)
    assert isinstance(net, MultiHeadNet)
    with ctx.stage("baseline accuracy and features"):
        # One pass over the whole test split gives the accuracies and, at the probe subsample, the features.
        def shared_and_logits(x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = net.backbone(x)
            return {"h": h, **{n: net.heads[f"head_{n}"](h) for n in net.head_names}}

        test = collect_features(shared_and_logits, ctx.split.test, device=ctx.device)
        acc = {}
        for t in ctx.tasks:
            y = task_labels(t, ctx.split.test.labels[t.label_column])
            acc[t.name] = float((test[t.name].argmax(axis=1) == y)[y >= 0].mean())
        h_tr = collect_features(lambda x: {"h": net.backbone(x)}, ctx.split.train, ctx.itr, device=ctx.device)["h"]
        h_te = test["h"][ctx.ite]
    with ctx.stage("baseline leakage"):
        leak = leakage_matrix(
            dict.fromkeys(ctx.y_tr, h_tr), ctx.y_tr, dict.fromkeys(ctx.y_te, h_te), ctx.y_te, **ctx.probes()
        )
        leak["features"] = "the shared representation (the input of every head): a multi-task student has no other"
    with ctx.stage("baseline MIG/DCI"):
        dis = _disentanglement(ctx, h_tr, h_te, "the shared representation")
    ratio = kf_leak["mean_diagonal"] / leak["mean_diagonal"] if leak["mean_diagonal"] else None
    return {
        "kind": "multi-task KD student: one shared network, one linear head per task, loss = KD + CE",
        "backbone": base.spec.to_json(),
        "feature_dim": base.feature_dim,
        "parameters": base.parameters,
        "factor_parameters": base.target_parameters,
        "tasks": {n: {"accuracy": a} for n, a in acc.items()},
        "leakage": leak,
        "disentanglement": dis,
        "history": base.history,
        "train_seconds": base.wall_seconds,
        "comparison": {
            "leakage_mean_off_diagonal": {"kf": kf_leak["mean_off_diagonal"], "baseline": leak["mean_off_diagonal"]},
            "leakage_mean_diagonal": {"kf": kf_leak["mean_diagonal"], "baseline": leak["mean_diagonal"]},
            "diagonal_ratio": ratio,
        },
    }


def _ckn_views(ckn: Backbone, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """z_c (key "") and the pooled last stage (key "_stage"), the CKN feature InfoMax matches to the teacher."""
    z_c, stages = ckn.forward_stages(x)
    return {"": z_c, "_stage": stages[-1]}


def _transfer_section(ctx: EvalContext, held: str) -> dict[str, Any]:
    """Factor set without ``held`` (trained or loaded from transfer/), then probes for ``held``."""
    names = [t.name for t in ctx.tasks]
    kept = [n for n in names if n != held]
    key = fingerprint("transfer/1", held, [t.to_json() for t in ctx.tasks], ctx.recipe.factor.to_json(), ctx.key)
    ctx.say(f"transfer: the factor set on {','.join(kept)}, without '{held}' (cached in transfer/)")
    claim_cache(ctx.out / "transfer", key)
    model, seconds, fresh = fit_transfer_factors(
        teacher=ctx.teacher,
        train=ctx.split.train,
        tasks=ctx.tasks,
        held_out=held,
        factor_config=ctx.recipe.factor,
        train_config=ctx.recipe.train,
        out_dir=ctx.out / "transfer",
        key=key,
        callbacks=ctx.callbacks("transfer"),
    )
    if fresh:
        ctx.trained["transfer"] = seconds
    with ctx.stage("transfer features and probes"):
        teacher_fn, teacher_desc = teacher_feature_fn(ctx.teacher.to(ctx.device))
        rand = random_ckn(ctx.recipe.factor, ctx.split.train.input_shape, seed=ctx.recipe.train.seed)
        ckn = model.ckn
        for net in (ckn, rand):
            fast(net, ctx.device)  # in place: the same module, moved and in channels_last
        feats = {f"ckn{k}": v for k, v in ctx.features(lambda x: _ckn_views(ckn, x)).items()}
        feats.update(ctx.features(teacher_fn))
        feats.update({f"random_ckn{k}": v for k, v in ctx.features(lambda x: _ckn_views(rand, x)).items()})
        task = next(t for t in ctx.tasks if t.name == held)
        y_tr = task_labels(task, ctx.split.train.labels[task.label_column][ctx.itr])
        y_te = task_labels(task, ctx.split.test.labels[task.label_column][ctx.ite])
        probe = transfer_probe(feats, y_tr, y_te, **ctx.probes())
    return {
        "held_out": held,
        "factorized_tasks": kept,
        "teacher_features": teacher_desc,
        **probe,
        "train_seconds": seconds,
    }


def run_evaluation(
    run_dir: str | Path,
    *,
    teacher: Teacher | str | Path | None = None,
    baseline: bool = False,
    transfer: bool = True,
    held_out: str | None = None,
    config: EvalConfig | None = None,
    callbacks: Callable[[str], Sequence[Callback]] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate the run in ``run_dir`` (see the module docstring) and return the updated report.

    ``teacher`` defaults to the one the run records; ``callbacks(name)`` gives the training callbacks of the
    comparison models ("baseline", "transfer"); ``log`` receives one line per stage.
    """
    started = time.perf_counter()
    cfg = config or EvalConfig()
    out = Path(run_dir)
    report = read_json(out / "report.json")
    recipe = Recipe.from_json(read_json(out / "recipe.json"))
    split = load_split(recipe.data)
    model, tasks = load_run_model(out, input_shape=split.train.input_shape)
    the_teacher, teacher_source = resolve_teacher(teacher, report)
    the_teacher.check_input(split.train.input_shape)
    names = [t.name for t in tasks]
    held = (held_out or default_held_out(names)) if transfer else None
    if held is not None and held not in names:
        raise ConfigError(f"--held-out {held!r} is not a task of this run; its tasks are {', '.join(names)}")
    ctx = make_context(
        out=out,
        recipe=recipe,
        split=split,
        tasks=tasks,
        teacher=the_teacher,
        config=cfg,
        callbacks=callbacks,
        log=log,
    )
    fast(model, ctx.device)
    for section in ("leakage", "disentanglement", "baseline", "transfer"):
        report.pop(section, None)  # a re-evaluation without --baseline must not keep stale numbers
    report.update(_factor_sections(ctx, model))
    if baseline:
        report["baseline"] = _baseline_section(ctx, model, report["leakage"])
    if held is not None:
        report["transfer"] = _transfer_section(ctx, held)
    with ctx.stage("plots and report.md"):
        plots = write_evaluation_plots(out, report, title=recipe.name)
        wall = time.perf_counter() - started
        report["evaluation"] = {
            "config": cfg.to_json(),
            "teacher": teacher_source,
            "probe_samples": {"train": len(ctx.itr), "test": len(ctx.ite)},
            "chance": "accuracy of always predicting the most frequent training label, on the test labels",
            "device": str(ctx.device),
            "timings_seconds": ctx.timings,
            "train_seconds": sum(ctx.trained.values()),
            "eval_seconds": wall - sum(ctx.trained.values()),
            "wall_seconds": wall,
            "plots": plots,
        }
        write_json(out / "report.json", report)
        write_report_md(out / "report.md", report)
    return report
