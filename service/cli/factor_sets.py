"""``kf factor-sets ...``: new factor-set versions through the API (admin key), without a full factorization.

    kf factor-sets extend REF --tasks pos_y [--teacher ID] [--dataset dsprites] [--epochs N] [--wait]
    kf factor-sets remove-tasks REF --tasks a,b
    kf factor-sets import RUN_DIR --name NAME --teacher ID --dataset dsprites

REF is a factor set's id, ``name`` (its latest version) or ``name:version``. ``import`` packs the run
directory's ``parts/``, ``report.json`` and ``recipe.json`` (nothing else) into a tar archive and uploads it.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

from service.cli.client import ApiError, _call, _command, _follow, _print
from service.cli.engine import csv_list

__all__ = ["add_factor_set_commands"]


def add_factor_set_commands(sub: Any) -> None:
    f = sub.add_parser("factor-sets", help="extend, narrow or import factor sets (via the API)")
    f = f.add_subparsers(dest="factor_sets_command", required=True)
    ext = _command(f, "extend", "train new tasks against a factor set's frozen CKN (registers version+1)", _extend)
    ext.add_argument("ref", help="factor set id, name or name:version")
    ext.add_argument("--tasks", type=csv_list, required=True, help="comma-separated new task names")
    ext.add_argument("--teacher", help="teacher id to distil from (default: the factor set's)")
    src = ext.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="built-in dataset (default: the factor set's)")
    src.add_argument("--dataset-id", help="id of an uploaded dataset")
    ext.add_argument("--epochs", type=int)
    ext.add_argument("--samples", type=int)
    ext.add_argument("--seed", type=int)
    ext.add_argument("--wait", action="store_true", help="follow progress until the job finishes")
    rm = _command(f, "remove-tasks", "register version+1 without some tasks (nothing trained or copied)", _remove)
    rm.add_argument("ref", help="factor set id, name or name:version")
    rm.add_argument("--tasks", type=csv_list, required=True, help="comma-separated task names to leave out")
    imp = _command(f, "import", "register a `kf factorize` run directory made elsewhere (verified)", _import)
    imp.add_argument("run_dir", type=Path)
    imp.add_argument("--name", required=True, help="factor set name (the next version of it is registered)")
    imp.add_argument("--teacher", required=True, help="id of the uploaded teacher the run distilled")
    isrc = imp.add_mutually_exclusive_group(required=True)
    isrc.add_argument("--dataset", help="built-in dataset it was trained on")
    isrc.add_argument("--dataset-id", help="id of the uploaded dataset it was trained on")


def _extend(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"tasks": args.tasks}
    for key, value in (("teacher_id", args.teacher), ("dataset", args.dataset), ("dataset_id", args.dataset_id)):
        if value is not None:
            body[key] = value
    overrides = {k: v for k, v in (("epochs", args.epochs), ("samples", args.samples), ("seed", args.seed)) if v}
    body["overrides"] = overrides
    job = _call(args, "POST", f"/v1/factor-sets/{args.ref}/tasks", json=body)
    if not args.wait:
        return _print(job)
    print(f"extension job {job['id']} queued", file=sys.stderr)
    return _follow(args, job["id"])


def _remove(args: argparse.Namespace) -> int:
    return _print(_call(args, "POST", f"/v1/factor-sets/{args.ref}/remove-tasks", json={"tasks": args.tasks}))


def _import(args: argparse.Namespace) -> int:
    run: Path = args.run_dir
    if not (run / "parts" / "manifest.json").is_file() or not (run / "report.json").is_file():
        raise ApiError(f"{run} is not a run directory of `kf factorize` (no parts/manifest.json or report.json)")
    spec: dict[str, Any] = {"name": args.name, "teacher_id": args.teacher}
    spec["dataset_id" if args.dataset_id else "dataset"] = args.dataset_id or args.dataset
    return _print(
        _call(
            args,
            "POST",
            "/v1/factor-sets/import",
            files={"file": ("run.tar", pack_run(run), "application/x-tar")},
            data={"spec": json.dumps(spec)},
        )
    )


def pack_run(run: Path) -> bytes:
    """The files of ``run`` that an import reads, as a tar archive in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("report.json", "recipe.json"):
            if (run / name).is_file():
                tar.add(run / name, arcname=name)
        manifest = json.loads((run / "parts" / "manifest.json").read_text())
        for entry in [manifest["ckn"], *manifest["tasks"].values()]:
            file = Path(str(entry["file"])).name
            tar.add(run / "parts" / file, arcname=f"parts/{file}")
        tar.add(run / "parts" / "manifest.json", arcname="parts/manifest.json")
    return buf.getvalue()
