"""Engine commands of ``kf``: local runs of kf_core, no catalog or API involved.

kf teacher fit --recipe dsprites --out runs/teacher
kf factorize --teacher runs/teacher --recipe dsprites --out runs/factor [--tasks shape,scale] [--nproc 2]
kf assemble runs/factor --tasks shape,scale --out model.onnx
kf predict model.onnx --input batch.npy
kf demo
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_engine_commands", "csv_list"]


def csv_list(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, e.g. shape,scale")
    return items


def _mapping(value: str) -> dict[str, str]:
    pairs = {}
    for item in csv_list(value):
        name, sep, target = item.partition("=")
        if not sep or not name or not target:
            raise argparse.ArgumentTypeError(f"expected name=graph_output pairs, got {item!r}")
        pairs[name] = target
    return pairs


def _shape(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in csv_list(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (D or C,H,W), got {value!r}") from None


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    p.add_argument("--samples", type=int, help="override the recipe's number of data samples")
    p.add_argument("--seed", type=int, help="override the recipe's training seed")


def add_engine_commands(sub: Any) -> None:
    """``kf teacher fit``, ``kf factorize``, ``kf assemble``, ``kf predict``, ``kf demo``: local runs, no service."""

    teacher = sub.add_parser("teacher", help="demo teachers").add_subparsers(dest="teacher_command", required=True)
    fit = teacher.add_parser("fit", help="train a teacher on a built-in recipe's data")
    fit.add_argument("--recipe", required=True, help="built-in recipe name (dsprites, digits) or a recipe JSON file")
    fit.add_argument("--out", required=True, type=Path, help="directory to write the teacher to")
    _run_options(fit)
    fit.set_defaults(handler=_cmd_teacher_fit)

    fac = sub.add_parser("factorize", help="factorize a teacher into factor networks")
    fac.add_argument("--teacher", required=True, type=Path, help="teacher directory, .onnx or TorchScript file")
    fac.add_argument("--recipe", required=True, help="built-in recipe name or recipe JSON file")
    fac.add_argument("--out", required=True, type=Path, help="run directory (resumes from its checkpoint)")
    fac.add_argument("--tasks", type=csv_list, help="comma-separated subset of the recipe's tasks")
    fac.add_argument("--outputs", type=_mapping, help="ONNX/TorchScript teacher: name=graph_output,...")
    fac.add_argument("--features", type=csv_list, help="ONNX/TorchScript teacher: outputs to use as stage features")
    fac.add_argument(
        "--input-shape", type=_shape, help="TorchScript teacher: one input's shape, D for vectors or C,H,W for images"
    )
    fac.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    fac.add_argument(
        "--nproc",
        type=int,
        help="train in N processes (torch.distributed via torchrun; default: the recipe's train.processes)",
    )
    fac.add_argument(
        "--dist-timeout",
        type=float,
        default=300.0,
        help="seconds a process waits for the others before the run fails (a lost process)",
    )
    _run_options(fac)
    fac.set_defaults(handler=_cmd_factorize)

    asm = sub.add_parser("assemble", help="assemble factor networks for a task subset into one ONNX graph")
    asm.add_argument("run_dir", type=Path, help="a factorize run directory (or its parts/ directory)")
    asm.add_argument("--tasks", type=csv_list, required=True, help="comma-separated task names")
    asm.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    asm.add_argument("--combined", action="store_true", help="add one softmax over the union of class subsets")
    asm.set_defaults(handler=_cmd_assemble)

    pred = sub.add_parser("predict", help="run an assembled graph on a .npy batch")
    pred.add_argument("model", type=Path, help="an assembled .onnx graph")
    pred.add_argument(
        "--input",
        type=Path,
        required=True,
        help=".npy float32 array of shape (N, *input shape): (N, D) or (N, C, H, W)",
    )
    pred.add_argument("--logits", action="store_true", help="also print raw logits")
    pred.set_defaults(handler=_cmd_predict)

    demo = sub.add_parser(
        "demo", help="the whole service on the embedded default: teacher, factorization job, assembly, predictions"
    )
    demo.add_argument("--out", type=Path, default=Path("kf-data/demo"), help="where to write the demo runs")
    demo.add_argument(
        "--engine", action="store_true", help="the library only (no API, catalog or jobs), on any --recipe"
    )
    demo.add_argument("--recipe", default="dsprites", help="--engine: built-in recipe name or recipe JSON file")
    _run_options(demo)
    demo.set_defaults(handler=_cmd_demo)


def _recipe(args: argparse.Namespace) -> Any:
    # lazy: keeps `kf --help` fast (kf_core loads torch and ONNX Runtime)
    from kf_core import get_recipe

    return get_recipe(args.recipe).with_overrides(epochs=args.epochs, samples=args.samples, seed=args.seed)


def _cmd_teacher_fit(args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast (kf_core loads torch and ONNX Runtime)
    from kf_core import ProgressBar, run_teacher_fit

    report = run_teacher_fit(_recipe(args), args.out, callbacks=[ProgressBar("teacher")])
    for name, row in report["outputs"].items():
        print(f"  {name:<14} test accuracy {100 * row['test_accuracy']:6.2f} %")
    print(f"teacher written to {args.out} in {report['wall_seconds']:.0f} s")
    return 0


def _cmd_factorize(args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast (kf_core loads torch and ONNX Runtime)
    from kf_core import DistConfig, ProgressBar, load_teacher, process_group, run_factorization
    from kf_core.errors import ConfigError

    recipe = _recipe(args)
    # Under torchrun (or any launcher that sets its variables) this process is one rank of the group.
    group = DistConfig.from_torchrun_env(os.environ, timeout_s=args.dist_timeout)
    if group is None:
        nproc = args.nproc or recipe.train.processes
        if nproc < 1:
            raise ConfigError("--nproc must be at least 1")
        if nproc > 1:
            return _relaunch_under_torchrun(args.argv, nproc)
        group = DistConfig(rank=0, world_size=1)
    elif args.nproc and args.nproc != group.world_size:
        raise ConfigError(f"--nproc {args.nproc} but torchrun started {group.world_size} processes; drop --nproc")
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, processes=group.world_size))
    if recipe.train.batch_size % group.world_size:  # replace() skips the config's own check
        raise ConfigError(
            f"batch_size {recipe.train.batch_size} does not split evenly over {group.world_size} processes"
        )
    teacher = load_teacher(args.teacher, outputs=args.outputs, features=args.features, input_shape=args.input_shape)
    with process_group(group, device=recipe.train.device) as dist:
        report = run_factorization(
            recipe,
            teacher,
            args.out,
            task_names=args.tasks,
            callbacks=[ProgressBar("factorize")] if dist.is_main else [],
            resume=not args.restart,
            # Recorded for `kf evaluate RUN_DIR`, which reloads the teacher by path: only when the path suffices.
            teacher_source=None if (args.outputs or args.input_shape) else str(args.teacher.resolve()),
            dist=dist,
        )
    if not dist.is_main:
        return 0
    _print_factor_report(report)
    print(f"factor set written to {args.out} in {report['wall_seconds']:.0f} s ({group.world_size} process(es))")
    return 0


def _relaunch_under_torchrun(argv: list[str], nproc: int) -> int:
    """Run this same command in ``nproc`` processes on this host with torchrun (torch.distributed.run).

    ``--nproc`` is left out: torchrun's own parser would take it for ``--nproc-per-node``, and the processes
    learn the group size from torchrun's variables anyway.
    """
    rest, skip = [], False
    for a in argv:
        if skip or a.startswith("--nproc="):
            skip = False
        elif a == "--nproc":
            skip = True
        else:
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["-m", "service.cli", *rest]
    return subprocess.run(cmd, check=False).returncode


def _print_factor_report(report: dict[str, Any]) -> None:
    print(f"  {'task':<14} {'teacher':>8} {'factor':>8} {'gap':>7}")
    for name, row in report["tasks"].items():
        t, f = 100 * row["teacher_accuracy"], 100 * row["factor_accuracy"]
        print(f"  {name:<14} {t:7.2f}% {f:7.2f}% {t - f:+6.2f}")
    asm = report["assembly"]
    print(f"  assembled graph vs factor networks: max abs diff {asm['max_abs_diff']:.2e}")
    if "combined" in asm:
        c = asm["combined"]
        print(
            f"  combined classifier: teacher {100 * c['teacher_accuracy']:.2f}%, "
            f"factor {100 * c['factor_accuracy']:.2f}%"
        )


def _parts_dir(run_dir: Path) -> Path:
    return run_dir / "parts" if (run_dir / "parts" / "manifest.json").exists() else run_dir


def _cmd_assemble(args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast (kf_core loads torch and ONNX Runtime)
    from kf_core import assemble_to_file, load_parts

    started = time.perf_counter()
    path = assemble_to_file(load_parts(_parts_dir(args.run_dir)), args.tasks, args.out, combined=args.combined)
    print(f"assembled {','.join(args.tasks)} into {path} in {1000 * (time.perf_counter() - started):.1f} ms")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast (kf_core loads torch and ONNX Runtime)
    from kf_core import predict_file

    print(json.dumps(predict_file(args.model, args.input, logits=args.logits), indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.engine:
        # lazy: keeps `kf --help` fast (kf_core loads torch and ONNX Runtime)
        from kf_core import demo_recipe, run_demo

        run_demo(demo_recipe(args.recipe, epochs=args.epochs, samples=args.samples, seed=args.seed), args.out)
        return 0
    if args.recipe != "dsprites":
        # lazy: keeps `kf --help` fast (kf_core loads torch and ONNX Runtime)
        from kf_core.errors import ConfigError

        raise ConfigError("the service demo runs the dsprites recipe; use --engine to run another recipe locally")
    # lazy: keeps `kf --help` fast
    from service.cli.demo import run_service_demo
    from service.config import get_settings

    run_service_demo(get_settings(), args.out, epochs=args.epochs, samples=args.samples, seed=args.seed)
    return 0
