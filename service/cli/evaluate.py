"""``kf evaluate RUN_DIR [--baseline]``: the evaluation subcommand of the ``kf`` command line.

    kf evaluate runs/factor --teacher runs/teacher --baseline

Measures leakage, MIG/DCI and transfer for a factorize run directory (and, with ``--baseline``, trains and
measures the multi-task KD student), adds them to ``report.json`` and writes the plots and ``report.md``.
The logic is :func:`kf_core.evaluation.run.run_evaluation`; this module only parses and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

__all__ = ["add_evaluate_command", "cmd_evaluate"]


def add_evaluate_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``evaluate`` on the ``kf`` parser's subcommands (the object ``add_subparsers`` returned)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="measure disentanglement (leakage, MIG, DCI) and transfer of a factorize run; optionally a baseline",
        description=(
            "Adds leakage, disentanglement, transfer (and baseline) sections to RUN_DIR/report.json and writes "
            "leakage.png, accuracy.png, disentanglement.png, transfer.png, training.png and report.md. "
            "The baseline and the transfer factor set are trained once (same recipe, data, budget and seed) and "
            "cached in RUN_DIR/baseline and RUN_DIR/transfer."
        ),
    )
    p.add_argument("run_dir", type=Path, help="a run directory written by `kf factorize`")
    p.add_argument("--teacher", type=Path, help="the run's teacher (directory or .onnx); default: the one recorded")
    p.add_argument("--baseline", action="store_true", help="also train and measure the multi-task KD baseline")
    p.add_argument("--no-transfer", action="store_true", help="skip the transfer probe (it trains a factor set)")
    p.add_argument("--held-out", help="task held out of the transfer factorization (default: shape, else the first)")
    p.add_argument("--probe-samples", type=int, help="train and test images per probe (default 5000 each)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads while measuring (default 1: fastest on a busy machine; 0 = torch's default)",
    )
    return p


def cmd_evaluate(args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast (kf_core loads torch and ONNX Runtime)
    from kf_core import ProgressBar
    from kf_core.errors import ConfigError
    from kf_core.evaluation import EvalConfig, run_evaluation

    if args.threads < 0:
        raise ConfigError(f"--threads must be 0 (torch's default) or more, got {args.threads}")
    config = EvalConfig(threads=args.threads or None)
    if args.probe_samples is not None:
        if args.probe_samples < 10:
            raise ConfigError(f"--probe-samples must be at least 10, got {args.probe_samples}")
        config = dataclasses.replace(config, probe_train=args.probe_samples, probe_test=args.probe_samples)
    print(f"kf evaluate: {args.run_dir}")
    report = run_evaluation(
        args.run_dir,
        teacher=args.teacher,
        baseline=args.baseline,
        transfer=not args.no_transfer,
        held_out=args.held_out,
        config=config,
        callbacks=lambda name: [ProgressBar(name)],
        log=print,
    )
    _print_summary(report, args.run_dir)
    return 0


def _num(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{float(v):.{digits}f}"


def _print_summary(report: dict[str, Any], run_dir: Path) -> None:
    leak, dis = report["leakage"], report["disentanglement"]
    base = report.get("baseline")
    rows = [("KF", leak, dis), *([("baseline", base["leakage"], base["disentanglement"])] if base else [])]
    print(f"  {'model':<10} {'off-diag':>9} {'diagonal':>9} {'MIG':>7} {'DCI D':>7} {'DCI C':>7} {'DCI I':>7}")
    for name, lk, ds in rows:
        d = ds["dci"]
        print(
            f"  {name:<10} {_num(lk['mean_off_diagonal']):>9} {_num(lk['mean_diagonal']):>9} "
            f"{_num(ds['mig']['mig']):>7} {_num(d['disentanglement']):>7} {_num(d['completeness']):>7} "
            f"{_num(d['informativeness']):>7}"
        )
    if "transfer" in report:
        tr = report["transfer"]
        acc = {k: f"{100 * r['accuracy']:.1f} %" for k, r in tr["features"].items()}
        print(
            f"  transfer to held-out {tr['held_out']!r}: CKN z_c {acc['ckn']} (random {acc['random_ckn']}), "
            f"CKN last stage {acc['ckn_stage']} (random {acc['random_ckn_stage']}), teacher {acc['teacher']}"
        )
    ev = report["evaluation"]
    print(
        f"written to {run_dir}: report.json, report.md and plots; evaluation "
        f"{ev['eval_seconds']:.0f} s (+ {ev['train_seconds']:.0f} s training comparison models)"
    )
