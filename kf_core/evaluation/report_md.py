"""The human side of an evaluated run: its PNG plots and ``report.md``, both drawn from ``report.json``.

Everything here reads the plain report dict that :func:`kf_core.evaluation.run.run_evaluation` builds, so a
report can be re-rendered from its JSON alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kf_core.report import plot_accuracy, plot_disentanglement, plot_leakage, plot_training_comparison, plot_transfer

__all__ = ["write_evaluation_plots", "write_report_md"]

KF = "KF factor networks"
BASELINE = "multi-task KD baseline"


def _scores(section: Mapping[str, Any]) -> dict[str, float | None]:
    dci = section["dci"]
    return {
        "MIG": section["mig"]["mig"],
        "DCI disentanglement": dci["disentanglement"],
        "DCI completeness": dci["completeness"],
        "DCI informativeness": dci["informativeness"],
    }


def _accuracies(report: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    tasks: Mapping[str, Any] = report.get("tasks") or {}
    series = {
        "teacher": {n: r["teacher_accuracy"] for n, r in tasks.items()},
        "factor network": {n: r["factor_accuracy"] for n, r in tasks.items()},
    }
    if "baseline" in report:
        series["multi-task KD baseline"] = {n: r["accuracy"] for n, r in report["baseline"]["tasks"].items()}
    return series


def write_evaluation_plots(out_dir: str | Path, report: Mapping[str, Any], *, title: str) -> dict[str, str]:
    """Write the evaluation's PNGs into ``out_dir``; returns ``{plot: file name}``."""
    out = Path(out_dir)
    base = report.get("baseline")
    files: dict[str, str] = {}
    leak = {KF: report["leakage"], **({BASELINE: base["leakage"]} if base else {})}
    plot_leakage(out / "leakage.png", leak, title=f"leakage: what z_i tells about task j ({title}, test split)")
    files["leakage"] = "leakage.png"
    plot_accuracy(out / "accuracy.png", _accuracies(report), title=f"per-task test accuracy ({title})")
    files["accuracy"] = "accuracy.png"
    scores = {KF: _scores(report["disentanglement"]), **({BASELINE: _scores(base["disentanglement"])} if base else {})}
    plot_disentanglement(out / "disentanglement.png", scores, title=f"disentanglement on the factors ({title})")
    files["disentanglement"] = "disentanglement.png"
    if "transfer" in report:
        tr = report["transfer"]
        plot_transfer(
            out / "transfer.png",
            tr,
            title=f"transfer to held-out '{tr['held_out']}' (factorized on {', '.join(tr['factorized_tasks'])})",
        )
        files["transfer"] = "transfer.png"
    histories = {KF: report.get("history") or [], **({BASELINE: base["history"]} if base else {})}
    tasks = list(report.get("tasks") or {})
    plot_training_comparison(out / "training.png", histories, tasks, title=f"training curves ({title})")
    files["training"] = "training.png"
    return files


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{float(v):.{digits}f}"


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * float(v):.2f} %"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *["| " + " | ".join(r) + " |" for r in rows]]


def _matrix(m: Mapping[str, Any]) -> list[str]:
    tasks = list(m["tasks"])
    rows = [[f"**{t}**", *[_f(v, 2) for v in row]] for t, row in zip(tasks, m["matrix"], strict=True)]
    return _table(["z_i \\ task j", *tasks], rows)


def write_report_md(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Write the Markdown summary of an evaluated report, linking the PNGs next to it."""
    ev = report.get("evaluation") or {}
    plots: Mapping[str, str] = ev.get("plots") or {}
    base = report.get("baseline")
    leak = report["leakage"]
    lines = [f"# Factorization report: `{report.get('recipe', '?')}`", ""]

    lines += ["## Summary", ""]
    lines.append(
        f"- Leakage (mean off-diagonal, lower is better): KF **{_f(leak['mean_off_diagonal'])}**"
        + (f", baseline **{_f(base['leakage']['mean_off_diagonal'])}**" if base else "")
    )
    lines.append(
        f"- Task information kept (mean diagonal): KF {_f(leak['mean_diagonal'])}"
        + (
            f", baseline {_f(base['leakage']['mean_diagonal'])} (ratio {_f(base['comparison']['diagonal_ratio'])})"
            if base
            else ""
        )
    )
    dis = report["disentanglement"]
    lines.append(
        f"- MIG / DCI D, C, I: KF {_f(dis['mig']['mig'])} / {_f(dis['dci']['disentanglement'])}, "
        f"{_f(dis['dci']['completeness'])}, {_f(dis['dci']['informativeness'])}"
        + (
            f"; baseline {_f(base['disentanglement']['mig']['mig'])} / "
            f"{_f(base['disentanglement']['dci']['disentanglement'])}, "
            f"{_f(base['disentanglement']['dci']['completeness'])}, "
            f"{_f(base['disentanglement']['dci']['informativeness'])}"
            if base
            else ""
        )
    )
    if "transfer" in report:
        tr = report["transfer"]
        rows = tr["features"]
        acc = {k: _pct(r["accuracy"]) for k, r in rows.items()}
        lines.append(
            f"- Transfer to held-out `{tr['held_out']}`: CKN z_c {acc.get('ckn')} vs random CKN "
            f"{acc.get('random_ckn')} ({_f(tr.get('ckn_minus_random_points'), 1)} points); CKN last stage "
            f"{acc.get('ckn_stage')} vs random {acc.get('random_ckn_stage')} "
            f"({_f(tr.get('ckn_stage_minus_random_stage_points'), 1)} points); teacher {acc.get('teacher')}"
        )
    lines.append("")

    lines += ["## Per-task accuracy (test split)", ""]
    tasks: Mapping[str, Any] = report.get("tasks") or {}
    header = ["task", "teacher", "factor network", *(["multi-task KD baseline"] if base else [])]
    rows_acc = [
        [
            n,
            _pct(r["teacher_accuracy"]),
            _pct(r["factor_accuracy"]),
            *([_pct(base["tasks"][n]["accuracy"])] if base else []),
        ]
        for n, r in tasks.items()
    ]
    lines += [*_table(header, rows_acc), "", f"![per-task accuracy]({plots.get('accuracy', 'accuracy.png')})", ""]

    lines += ["## Leakage", ""]
    lines.append(
        "Entry (i, j): a linear probe (multinomial logistic regression on whitened features) from task i's "
        "feature to task j's labels, fitted on training images and scored on test images, as accuracy above "
        "chance normalised to [0, 1]. Diagonal = task information kept; off-diagonal = leakage. "
        f"KF features: {leak.get('features', 'mu_i')}."
    )
    lines += ["", "KF factor networks:", "", *_matrix(leak), ""]
    if base:
        features = base["leakage"].get("features", "")
        lines += [f"Multi-task KD baseline; features: {features}.", "", *_matrix(base["leakage"]), ""]
    lines += [f"![leakage heatmaps]({plots.get('leakage', 'leakage.png')})", ""]

    lines += ["## Disentanglement (MIG, DCI)", ""]
    header = ["model", "latents", "dim", "MIG", "DCI D", "DCI C", "DCI I"]
    models = [("KF factor networks", dis), *([("multi-task KD baseline", base["disentanglement"])] if base else [])]
    rows_dis = [
        [
            name,
            d["latents"],
            str(d["latent_dim"]),
            _f(d["mig"]["mig"]),
            _f(d["dci"]["disentanglement"]),
            _f(d["dci"]["completeness"]),
            _f(d["dci"]["informativeness"]),
        ]
        for name, d in models
    ]
    lines += [*_table(header, rows_dis), ""]
    lines.append(
        f"Factors: {', '.join(dis['factors'])}. MIG: {dis['mig']['estimator']}. DCI: {dis['dci']['estimator']}. "
        "Both are per latent dimension: MIG in particular scores a factor near 0 when it is spread over several "
        "dimensions (as a TSN spreads its task over its width), even if no other task's dimensions carry it; "
        "the leakage matrix above is the per-task view."
    )
    lines += ["", f"![disentanglement]({plots.get('disentanglement', 'disentanglement.png')})", ""]

    if "transfer" in report:
        tr = report["transfer"]
        lines += ["## Transfer of the common knowledge", ""]
        lines.append(
            f"A factor set trained on {', '.join(tr['factorized_tasks'])} only (same recipe, data and budget); a "
            f"linear probe for the held-out task `{tr['held_out']}` on each frozen representation. Teacher "
            f"features: {tr['teacher_features']}."
        )
        names = {
            "ckn": "KF CKN z_c",
            "ckn_stage": "KF CKN last stage (pooled)",
            "teacher": "teacher penultimate",
            "teacher_stage": "teacher last stage (pooled)",
            "random_ckn": "random CKN z_c",
            "random_ckn_stage": "random CKN last stage (pooled)",
        }
        rows_tr = [
            [names.get(k, k), str(r["dim"]), _pct(r["accuracy"]), _pct(r["chance"]), _f(r["normalised"])]
            for k, r in tr["features"].items()
        ]
        lines += ["", *_table(["representation", "dim", "accuracy", "chance", "normalised"], rows_tr), ""]
        lines += [f"![transfer]({plots.get('transfer', 'transfer.png')})", ""]

    if base:
        kwargs = ", ".join(f"{k}={v}" for k, v in base["backbone"]["kwargs"].items())
        lines += ["## Baseline", ""]
        lines.append(
            f"{base['kind']}. Backbone `{base['backbone']['name']}` ({kwargs}), shared "
            f"feature width {base['feature_dim']}: {base['parameters']:,} parameters vs {base['factor_parameters']:,} "
            f"for the factor set (CKN + every TSN + heads). Trained in {base['train_seconds']:.0f} s."
        )
        lines.append("")

    lines += ["## Training curves", "", f"![training curves]({plots.get('training', 'training.png')})", ""]
    if ev:
        lines += ["## How this was measured", ""]
        lines.append(
            f"Probes and DCI fitted on {ev['probe_samples']['train']} training images, scored (and MIG computed) "
            f"on {ev['probe_samples']['test']} test images; accuracies use the whole test split. Chance: "
            f"{ev['chance']}. Teacher: `{ev['teacher']}`. Evaluation took {ev['eval_seconds']:.0f} s on "
            f"{ev['device']} (plus {ev['train_seconds']:.0f} s training comparison models)."
        )
        lines.append("")
    Path(path).write_text("\n".join(lines))
    return Path(path)
