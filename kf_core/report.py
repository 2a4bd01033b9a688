"""Run reports: ``report.json`` (plain JSON-serialisable structures) and PNG plots.

The service shows these numbers in its catalog, so everything here is plain dicts, lists, floats and strings.
Plots: per-task accuracy bars, training curves (one run, or several models side by side per task), leakage
heatmaps side by side on one colour scale, disentanglement scores and the transfer probe. ``report.md`` is
written by :mod:`kf_core.evaluation.report_md`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "plot_accuracy",
    "plot_curves",
    "plot_disentanglement",
    "plot_leakage",
    "plot_training_comparison",
    "plot_transfer",
    "write_json",
]


def _clean(v: Any) -> Any:
    # JSON has no NaN/inf: report them as null rather than writing invalid JSON.
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def write_json(path: str | Path, doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` as indented JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_clean(doc), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def _pyplot() -> Any:
    import matplotlib  # imported here: slow to import, and only runs that draw plots need it

    matplotlib.use("Agg")  # headless: never try to open a window
    import matplotlib.pyplot as plt  # after use("Agg"): pyplot picks its backend when first imported

    return plt


def plot_accuracy(path: str | Path, series: Mapping[str, Mapping[str, float]], *, title: str) -> Path:
    """Grouped bars: one group per task, one bar per series (e.g. teacher, factor), accuracy in percent."""
    plt = _pyplot()
    names = list(series)
    tasks = list(next(iter(series.values())).keys()) if series else []
    fig, ax = plt.subplots(figsize=(max(5.0, 0.65 * len(tasks) * max(2, len(names)) + 2), 3.8), dpi=110)
    width = 0.8 / max(len(names), 1)
    crowded = len(names) > 2  # side-by-side labels of three bars run into each other: stand them up
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(tasks))]
        ys = [100 * series[name].get(t, float("nan")) for t in tasks]
        bars = ax.bar(xs, ys, width=width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2, rotation=90 if crowded else 0)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 118 if crowded else 105)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside: never over a bar
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_curves(path: str | Path, history: Sequence[Mapping[str, float]], *, title: str) -> Path:
    """Training curves per epoch: total loss on the left, per-task train/test accuracy on the right."""
    plt = _pyplot()
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    ax_l.plot(epochs, [row.get("loss", float("nan")) for row in history], marker="o", label="total loss")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("loss")
    ax_l.set_title("training loss")
    ax_l.legend(fontsize=8)
    keys = sorted({k for row in history for k in row if k.endswith("_acc")})
    for k in keys:
        ax_a.plot(epochs, [100 * row.get(k, float("nan")) for row in history], marker=".", label=k)
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("accuracy (%)")
    ax_a.set_title("accuracy per task")
    if keys:
        ax_a.legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_leakage(path: str | Path, matrices: Mapping[str, Mapping[str, Any]], *, title: str) -> Path:
    """Leakage heatmaps side by side, one per model, on one colour scale (0 = chance, 1 = perfect read).

    Each value of ``matrices`` is a :func:`kf_core.evaluation.leakage.leakage_matrix` result.
    """
    plt = _pyplot()
    names = list(matrices)
    n_tasks = max(len(m["tasks"]) for m in matrices.values())
    side = max(3.2, 0.75 * n_tasks + 1.6)
    fig, axes = plt.subplots(
        1, len(names), figsize=(side * len(names) + 1.6, side + 1.6), dpi=110, squeeze=False, layout="constrained"
    )
    image = None
    for k, (ax, name) in enumerate(zip(axes[0], names, strict=True)):
        m = matrices[name]
        tasks = list(m["tasks"])
        values = [[math.nan if v is None else float(v) for v in row] for row in m["matrix"]]
        image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                text = "n/a" if math.isnan(v) else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="black" if v > 0.6 else "white")
        ax.set_xticks(range(len(tasks)), tasks, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(tasks)), tasks if k == 0 else [""] * len(tasks), fontsize=8)
        ax.set_xlabel("probed task j (labels)")
        if k == 0:
            ax.set_ylabel("feature of task i (row)")
        shared = " (one shared feature:\nevery row the same)" if m.get("shared_representation") else ""
        off, diag = m.get("mean_off_diagonal"), m.get("mean_diagonal")
        ax.set_title(f"{name}{shared}\noff-diagonal {_fmt(off)}, diagonal {_fmt(diag)}", fontsize=9)
    if image is not None:
        bar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85)
        bar.set_label("linear-probe accuracy above chance, normalised")
    fig.suptitle(title)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.3f}"


def _bars(ax: Any, series: Mapping[str, Mapping[str, float | None]], groups: Sequence[str], fmt: str) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        ys = [math.nan if values.get(g) is None else float(values[g]) for g in groups]  # type: ignore[arg-type]
        bars = ax.bar(xs, ys, width=width, label=name)
        ax.bar_label(bars, fmt=fmt, fontsize=7, padding=1)
    ax.set_xticks(range(len(groups)), groups)
    ax.legend(fontsize=8)


def plot_disentanglement(path: str | Path, scores: Mapping[str, Mapping[str, float | None]], *, title: str) -> Path:
    """Grouped bars of the disentanglement scores (e.g. MIG, DCI D/C/I) per model, all on [0, 1]."""
    plt = _pyplot()
    groups = list(next(iter(scores.values())).keys()) if scores else []
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(groups) + 2), 3.8), dpi=110)
    _bars(ax, scores, groups, "%.2f")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score (higher = better)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_transfer(path: str | Path, transfer: Mapping[str, Any], *, title: str) -> Path:
    """Held-out-task probe accuracy per representation, with the chance level as a dashed line."""
    plt = _pyplot()
    rows: Mapping[str, Mapping[str, float]] = transfer["features"]
    labels = {
        "ckn": "KF CKN\nz_c",
        "ckn_stage": "KF CKN\nlast stage",
        "teacher": "teacher\npenultimate",
        "teacher_stage": "teacher\nlast stage",
        "random_ckn": "random CKN\nz_c",
        "random_ckn_stage": "random CKN\nlast stage",
    }
    names = list(rows)
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2.0, 3.8), dpi=110)
    colours = ["C1" if n.startswith("random") else "C2" if n.startswith("teacher") else "C0" for n in names]
    bars = ax.bar([labels.get(n, n) for n in names], [100 * rows[n]["accuracy"] for n in names], color=colours)
    ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=1)
    chance = next((r["chance"] for r in rows.values() if r.get("chance") is not None), None)
    if chance is not None:
        ax.axhline(100 * chance, color="grey", linestyle="--", label=f"chance ({100 * chance:.1f} %)")
        ax.legend(fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel(f"linear-probe test accuracy on '{transfer.get('held_out', '?')}' (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_training_comparison(
    path: str | Path, histories: Mapping[str, Sequence[Mapping[str, float]]], tasks: Sequence[str], *, title: str
) -> Path:
    """Per-epoch training curves of several models: total loss, then one accuracy panel per task.

    Solid lines are training accuracy (running mean over the epoch), dashed lines test accuracy where recorded.
    """
    plt = _pyplot()
    cols = min(3, len(tasks) + 1)
    rows = math.ceil((len(tasks) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=110, squeeze=False)
    flat = axes.ravel().tolist()
    for k, (name, history) in enumerate(histories.items()):
        epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
        colour = f"C{k}"
        flat[0].plot(epochs, [row.get("loss", math.nan) for row in history], marker="o", color=colour, label=name)
        for ax, task in zip(flat[1:], tasks, strict=False):
            train = [100 * row.get(f"{task}/train_acc", math.nan) for row in history]
            ax.plot(epochs, train, marker=".", color=colour, label=f"{name} train")
            if any(f"{task}/test_acc" in row for row in history):
                test = [100 * row.get(f"{task}/test_acc", math.nan) for row in history]
                ax.plot(epochs, test, linestyle="--", color=colour, label=f"{name} test")
    flat[0].set_title("total training loss (objectives differ)", fontsize=9)
    flat[0].set_xlabel("epoch")
    flat[0].set_ylabel("loss")
    flat[0].legend(fontsize=7)
    for ax, task in zip(flat[1:], tasks, strict=False):
        ax.set_title(f"{task}: accuracy", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
    for ax in flat[len(tasks) + 1 :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
