"""API client commands: ``kf teachers ...``, ``kf jobs ...`` and ``kf aliases ...`` talk to a running KF API over HTTP.

The API's address comes from ``--api`` or ``KF_API_URL`` (default ``http://127.0.0.1:8000``), its key (when the
server has keys) from ``--api-key`` or ``KF_API_KEY``. Output is JSON for
single objects (pipe it to ``jq``) and a short table for lists. An API error prints its message and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from service.cli.engine import csv_list

__all__ = ["ApiError", "add_client_commands"]

_FINAL = ("succeeded", "failed", "cancelled")


class ApiError(Exception):
    """The API answered with an error, or could not be reached."""


def _command(sub: Any, name: str, help: str, handler: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help)
    p.add_argument("--api", default=os.environ.get("KF_API_URL", "http://127.0.0.1:8000"), help="the KF API's URL")
    p.add_argument("--api-key", default=os.environ.get("KF_API_KEY"), help="API key (default: KF_API_KEY)")
    p.set_defaults(handler=handler)
    return p


def add_client_commands(sub: Any) -> None:
    t = sub.add_parser("teachers", help="teachers in the catalog (via the API)")
    t = t.add_subparsers(dest="teachers_command", required=True)
    up = _command(t, "upload", "upload an ONNX or TorchScript teacher", _teachers_upload)
    up.add_argument("file", type=Path)
    up.add_argument("--spec", type=Path, required=True, help="JSON teacher spec (name, outputs, tasks, ...)")
    _command(t, "list", "list teachers", _teachers_list)
    _command(t, "show", "show one teacher", lambda a: _print(_call(a, "GET", f"/v1/teachers/{a.id}"))).add_argument(
        "id"
    )

    j = sub.add_parser("jobs", help="factorization jobs (via the API)")
    j = j.add_subparsers(dest="jobs_command", required=True)
    submit = _command(j, "submit", "submit a factorization job", _jobs_submit)
    submit.add_argument("--teacher", required=True, help="teacher id")
    src = submit.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="built-in dataset: dsprites or digits")
    src.add_argument("--dataset-id", help="id of an uploaded dataset")
    submit.add_argument("--recipe", help="built-in recipe name, or a recipe .json file sent as an object")
    submit.add_argument("--tasks", type=csv_list, help="comma-separated task names")
    submit.add_argument("--epochs", type=int)
    submit.add_argument("--samples", type=int)
    submit.add_argument("--seed", type=int)
    submit.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=JSON", help="override, e.g. train.lr=0.01"
    )
    submit.add_argument("--name", help="name of the factor set it registers")
    submit.add_argument("--max-attempts", type=int)
    submit.add_argument("--wait", action="store_true", help="follow progress until the job finishes")
    ls = _command(j, "list", "list jobs, newest first", _jobs_list)
    ls.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--offset", type=int, default=0)
    show = _command(j, "show", "show a job (status, progress, error)", _jobs_show)
    show.add_argument("id")
    show.add_argument("--wait", action="store_true", help="follow progress until the job finishes")
    cancel = _command(j, "cancel", "cancel a queued or running job", _jobs_cancel)
    cancel.add_argument("id")

    r = sub.add_parser("retire", help="delete a factor set version, a teacher or a dataset (via the API)")
    r = r.add_subparsers(dest="retire_command", required=True)
    _command(r, "factor-set", "delete a version (id or name:version)", _retire("factor-sets")).add_argument("ref")
    _command(r, "teacher", "delete a teacher (id)", _retire("teachers")).add_argument("ref")
    _command(r, "dataset", "delete a dataset (id)", _retire("datasets")).add_argument("ref")

    a = sub.add_parser("aliases", help="factor set aliases, name@alias (via the API)")
    a = a.add_subparsers(dest="aliases_command", required=True)
    _command(a, "list", "list a factor set's aliases", _aliases_list).add_argument("name")
    put = _command(a, "set", "point NAME@ALIAS at VERSION (create or move it)", _aliases_set)
    put.add_argument("name")
    put.add_argument("alias")
    put.add_argument("version", type=int)
    rm = _command(a, "delete", "delete an alias", _aliases_delete)
    rm.add_argument("name")
    rm.add_argument("alias")


def _call(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    import httpx  # lazy: keeps `kf --help` and the engine commands fast

    try:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        response = httpx.request(method, args.api.rstrip("/") + path, timeout=60, headers=headers, **kw)
    except httpx.TransportError as e:
        raise ApiError(
            f"cannot reach the KF API at {args.api} ({e}); start it with `kf serve` or set KF_API_URL"
        ) from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:300]
        raise ApiError(f"{detail} (HTTP {response.status_code})")
    return response.json()


def _print(obj: Any) -> int:
    print(json.dumps(obj, indent=2))
    return 0


def _teachers_upload(args: argparse.Namespace) -> int:
    spec = args.spec.read_text()
    with args.file.open("rb") as f:
        return _print(_call(args, "POST", "/v1/teachers", files={"file": (args.file.name, f)}, data={"spec": spec}))


def _teachers_list(args: argparse.Namespace) -> int:
    page = _call(args, "GET", "/v1/teachers", params={"limit": 200})
    for t in page["data"]:
        outputs = ",".join(f"{k}:{v}" for k, v in t["output_sizes"].items())
        print(f"{t['id']}  {t['name']:<24} {t['format']:<11} {outputs}")
    print(f"{page['count']} teacher(s)")
    return 0


def _jobs_submit(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"teacher_id": args.teacher}
    body["dataset_id" if args.dataset_id else "dataset"] = args.dataset_id or args.dataset
    if args.recipe:
        path = Path(args.recipe)
        body["recipe"] = json.loads(path.read_text()) if path.suffix == ".json" else args.recipe
    if args.tasks:
        body["tasks"] = args.tasks
    overrides: dict[str, Any] = {k: v for k, v in (("epochs", args.epochs), ("samples", args.samples)) if v}
    if args.seed is not None:
        overrides["seed"] = args.seed
    for item in args.set:
        key, sep, raw = item.partition("=")
        section, dot, field = key.partition(".")
        if not sep or not dot or section not in ("train", "factor", "data"):
            raise ApiError(f"--set expects train.KEY=VALUE, factor.KEY=VALUE or data.KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # a bare word is a string
        overrides.setdefault(section, {})[field] = value
    body["overrides"] = overrides
    for key, value in (("name", args.name), ("max_attempts", args.max_attempts)):
        if value is not None:
            body[key] = value
    job = _call(args, "POST", "/v1/jobs", json=body)
    if not args.wait:
        return _print(job)
    print(f"job {job['id']} queued", file=sys.stderr)
    return _follow(args, job["id"])


def _jobs_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit, "offset": args.offset}
    if args.status:
        params["status"] = args.status
    page = _call(args, "GET", "/v1/jobs", params=params)
    for job in page["data"]:
        print(
            f"{job['id']}  {job['status']:<10} {job['stage']:<12} {100 * job['progress']:5.1f}%  "
            f"epoch {job['epoch']}/{job['epochs']}  {job['factor_set_name']}"
        )
    print(f"{len(page['data'])} of {page['count']} job(s)")
    return 0


def _retire(collection: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        return _print(_call(args, "DELETE", f"/v1/{collection}/{quote(args.ref, safe='')}"))

    return handler


def _aliases_list(args: argparse.Namespace) -> int:
    page = _call(args, "GET", f"/v1/factor-sets/{quote(args.name, safe='')}/aliases")
    for row in page["data"]:
        print(f"{row['ref']:<40} -> version {row['version']}  ({row['factor_set_id']})")
    print(f"{page['count']} alias(es)")
    return 0


def _aliases_set(args: argparse.Namespace) -> int:
    path = f"/v1/factor-sets/{quote(args.name, safe='')}/aliases/{quote(args.alias, safe='')}"
    return _print(_call(args, "PUT", path, json={"version": args.version}))


def _aliases_delete(args: argparse.Namespace) -> int:
    path = f"/v1/factor-sets/{quote(args.name, safe='')}/aliases/{quote(args.alias, safe='')}"
    return _print(_call(args, "DELETE", path))


def _jobs_cancel(args: argparse.Namespace) -> int:
    return _print(_call(args, "POST", f"/v1/jobs/{args.id}/cancel"))


def _jobs_show(args: argparse.Namespace) -> int:
    if args.wait:
        return _follow(args, args.id)
    return _print(_call(args, "GET", f"/v1/jobs/{args.id}"))


def _follow(args: argparse.Namespace, job_id: str) -> int:
    last = ""
    while True:
        job = _call(args, "GET", f"/v1/jobs/{job_id}")
        line = f"{job['status']:<10} {job['stage']:<12} {100 * job['progress']:5.1f}%"
        line += f"  epoch {job['epoch']}/{job['epochs']}  step {job['step']}/{job['steps_total']}"
        if line != last:
            print(line, file=sys.stderr)
            last = line
        if job["status"] in _FINAL:
            _print(job)
            return 0 if job["status"] == "succeeded" else 1
        time.sleep(1.0)
