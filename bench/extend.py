"""Benchmark: extending a factor set with a new task against its frozen CKN, against factorizing all tasks.

On the ``dsprites`` recipe (or a smaller budget through the options): fit the demo teacher (or reuse one), then

- factorize the first 4 tasks (shape, scale, orientation, pos_x): factor set v1;
- extend v1 with the fifth task (pos_y) against v1's frozen CKN: v2 (only TSN_pos_y + its heads train);
- factorize all 5 tasks at once: the baseline the extended task is compared with.

Figures: the extended task's test accuracy against the same task in the full 5-task factorization (target: within
1 point), the extension's training time against the full factorization's (target: at most a third; both measured
in this run, so the ratio holds on any machine, not the seconds), whether v1 and v2 have the same CKN sha256, and
whether the 4 old tasks' outputs (assembled graph, test split) are bitwise equal across versions.

Run: ``nice -n 10 .venv/bin/python bench/extend.py --out /tmp/kf-extend [--epochs N] [--samples N]
[--teacher DIR]``. The last output line is JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

ACCURACY_POINTS = 1.0
TIME_RATIO_TARGET = 1 / 3
OLD = ["shape", "scale", "orientation", "pos_x"]
NEW = "pos_y"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="working directory (runs are written under it)")
    ap.add_argument("--epochs", type=int, help="factorization epochs (default: the recipe's)")
    ap.add_argument("--samples", type=int, help="dataset samples (default: the recipe's)")
    ap.add_argument("--teacher", type=Path, help="a teacher directory from `kf teacher fit` to reuse")
    ap.add_argument("--teacher-epochs", type=int, help="teacher fitting epochs (default: the recipe's)")
    args = ap.parse_args()

    from kf_core import get_recipe, load_parts, load_teacher, run_extension, run_factorization, run_teacher_fit
    from kf_core.assemble import assemble
    from kf_core.data.spec import load_split
    from kf_core.ort import create_session

    recipe = get_recipe("dsprites").with_overrides(samples=args.samples)
    if args.epochs is not None:
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, epochs=args.epochs))
    if args.teacher_epochs is not None:
        t_train = dataclasses.replace(recipe.teacher.train, epochs=args.teacher_epochs)
        recipe = dataclasses.replace(recipe, teacher=dataclasses.replace(recipe.teacher, train=t_train))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    teacher_dir = args.teacher or out / "teacher"
    if not (teacher_dir / "teacher.json").exists():
        print(f"fitting the teacher into {teacher_dir} ...", flush=True)
        run_teacher_fit(recipe, teacher_dir)
    teacher = load_teacher(teacher_dir)

    print("factorizing 4 tasks (v1) ...", flush=True)
    v1 = _finished(out / "v1", recipe)  # finished runs of the same budget are reused: a rerun only extends
    if v1 is None:
        v1 = run_factorization(recipe, teacher, out / "v1", task_names=OLD, resume=False)
    print("extending v1 with pos_y against its frozen CKN (v2) ...", flush=True)
    new_task = [t for t in recipe.tasks if t.name == NEW]
    cpu = _cpu_seconds()
    v2 = run_extension(recipe, teacher, out / "v1" / "parts", out / "v2", tasks=new_task, resume=False)
    extend_cpu = _cpu_seconds() - cpu
    print("factorizing all 5 tasks (baseline) ...", flush=True)
    full = _finished(out / "full", recipe)
    full_cpu = None
    if full is None:
        cpu = _cpu_seconds()
        full = run_factorization(recipe, teacher, out / "full", resume=False)
        full_cpu = _cpu_seconds() - cpu

    p1, p2 = load_parts(out / "v1" / "parts", cache=False), load_parts(out / "v2" / "parts", cache=False)
    x = load_split(recipe.data).test.images(slice(0, 2048))
    outs = [f"logits_{n}" for n in OLD]
    before = create_session(assemble(p1, OLD)).run(outs, {"x": x})
    after = create_session(assemble(p2, p2.task_names)).run(outs, {"x": x})
    bitwise = all(a.tobytes() == b.tobytes() for a, b in zip(before, after, strict=True))
    sha = [hashlib.sha256((out / v / "parts" / "ckn.onnx").read_bytes()).hexdigest() for v in ("v1", "v2")]

    ext_acc = 100 * v2["tasks"][NEW]["factor_accuracy"]
    full_acc = 100 * full["tasks"][NEW]["factor_accuracy"]
    ratio = v2["train_seconds"] / full["train_seconds"]
    # CPU seconds (this process and its children) do not depend on what else the machine runs, wall seconds do.
    cpu_ratio = extend_cpu / full_cpu if full_cpu else None
    load = os.getloadavg()
    result: dict[str, Any] = {
        "bench": "extend",
        "recipe": recipe.name,
        "epochs": recipe.train.epochs,
        "samples": recipe.data.samples,
        "task": NEW,
        "extended_accuracy": ext_acc,
        "full_accuracy": full_acc,
        "accuracy_gap_points": full_acc - ext_acc,
        "accuracy_ok": full_acc - ext_acc <= ACCURACY_POINTS,
        "v1_train_seconds": v1["train_seconds"],
        "extend_train_seconds": v2["train_seconds"],
        "full_train_seconds": full["train_seconds"],
        "time_ratio": ratio,
        "time_ok": ratio <= TIME_RATIO_TARGET,
        "extend_cpu_seconds": extend_cpu,
        "full_cpu_seconds": full_cpu,
        "cpu_time_ratio": cpu_ratio,
        "cpu_time_ok": None if cpu_ratio is None else cpu_ratio <= TIME_RATIO_TARGET,
        "ckn_sha256_v1": sha[0],
        "ckn_sha256_v2": sha[1],
        "ckn_same": sha[0] == sha[1],
        "old_tasks_bitwise_equal": bitwise,
        "old_tasks_test_samples": len(x),
        "loadavg": [round(v, 2) for v in load],
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"{NEW}: extended {ext_acc:.2f} %  full 5-task {full_acc:.2f} %  gap {full_acc - ext_acc:+.2f} points")
    print(f"training time: extension {v2['train_seconds']:.1f} s / full {full['train_seconds']:.1f} s = {ratio:.3f}")
    if cpu_ratio is not None:
        print(f"CPU time: extension {extend_cpu:.1f} s / full {full_cpu:.1f} s = {cpu_ratio:.3f}")
    print(f"CKN sha256 v1 == v2: {sha[0] == sha[1]}; old tasks bitwise equal over {len(x)} samples: {bitwise}")
    print(f"load average {load}")
    print(json.dumps(result))


def _cpu_seconds() -> float:
    """User + system CPU seconds used so far by this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _finished(run_dir: Path, recipe: Any) -> dict[str, Any] | None:
    """The report of a finished factorization in ``run_dir`` made on ``recipe``'s data and epochs, else None."""
    from kf_core.data.spec import load_split

    path = run_dir / "report.json"
    if not path.exists():
        return None
    report: dict[str, Any] = json.loads(path.read_text())
    budget = (len(load_split(recipe.data).train), recipe.train.epochs)
    return report if (report["train_samples"], len(report["history"])) == budget else None


if __name__ == "__main__":
    main()
