"""The ``kf`` command line.

Engine (local runs, see ``service.cli.engine`` and ``service.cli.evaluate``):
    kf teacher fit | factorize | assemble | predict | demo | evaluate
Service operations (``service.cli.ops``):
    kf serve [--host H --port P]        the HTTP API (jobs run inline unless KF_REDIS_URL is set)
    kf worker [--queue Q] [--burst]     an RQ worker for factorization jobs (needs KF_REDIS_URL)
    kf db upgrade | current             migrate the catalog (KF_DATABASE_URL) / show its revision
    kf gc [--dry-run]                   delete artifacts that nothing in the catalog references
API client (``service.cli.client``; --api or KF_API_URL, default http://127.0.0.1:8000):
    kf teachers upload FILE --spec SPEC.json | list | show ID
    kf jobs submit --teacher ID --dataset dsprites [--tasks a,b] [--epochs N] [--set train.lr=0.01] [--wait]
    kf jobs list [--status S] | show ID | cancel ID
    kf factor-sets extend REF --tasks t [--wait] | remove-tasks REF --tasks t | import RUN_DIR --name N ...
    kf retire factor-set NAME:VERSION | teacher ID | dataset ID
    kf aliases list NAME | set NAME ALIAS VERSION | delete NAME ALIAS

Errors a user can cause print one line saying what to fix and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from service.cli.client import ApiError, add_client_commands
from service.cli.engine import add_engine_commands
from service.cli.evaluate import add_evaluate_command, cmd_evaluate
from service.cli.factor_sets import add_factor_set_commands
from service.cli.ops import add_ops_commands
from service.errors import ServiceError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kf", description="Knowledge factorization as a service.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_engine_commands(sub)
    add_evaluate_command(sub).set_defaults(handler=cmd_evaluate)
    add_ops_commands(sub)
    add_client_commands(sub)
    add_factor_set_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `kf factorize --nproc N` relaunches itself
    from kf_core.errors import KfError  # lazy: kf_core loads ONNX Runtime (~1 s); `kf --help` needs neither

    try:
        status: int = args.handler(args)
        return status
    except (KfError, ServiceError, ApiError) as e:
        print(f"kf {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; a re-run resumes from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
