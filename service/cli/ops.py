"""Service operations: ``kf serve``, ``kf worker``, ``kf db upgrade|current``. Settings come from ``KF_*``."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_ops_commands"]


def add_ops_commands(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 in containers)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (use with KF_REDIS_URL)")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(handler=_cmd_serve)

    worker = sub.add_parser("worker", help="run an RQ worker for factorization jobs (needs KF_REDIS_URL)")
    worker.add_argument("--queue", action="append", help="queue to listen on (repeatable; default KF_QUEUE)")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument("--name", help="worker name (default: RQ's, host and pid based)")
    worker.add_argument("--max-jobs", type=int, help="exit after this many jobs")
    worker.set_defaults(handler=_cmd_worker)

    db = sub.add_parser("db", help="catalog database").add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="apply migrations (KF_DATABASE_URL) up to a revision")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(handler=_cmd_db_upgrade)
    db.add_parser("current", help="print the catalog's revision and the code's head").set_defaults(
        handler=_cmd_db_current
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.config import get_settings

    settings = get_settings()  # fail fast on bad KF_* values, before uvicorn starts
    if args.workers > 1 and not settings.redis_url:
        print("kf serve: note: with several workers and no KF_REDIS_URL, every worker runs inline jobs")
    uvicorn.run(
        "service.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from service.execute import configure_logging
    from service.worker import run_worker

    configure_logging()
    run_worker(queues=args.queue or (), burst=args.burst, name=args.name, max_jobs=args.max_jobs)
    return 0


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from service.config import get_settings
    from service.migrate import upgrade

    revision = upgrade(get_settings(), args.revision)
    print(f"catalog at revision {revision}")
    return 0


def _cmd_db_current(_args: argparse.Namespace) -> int:
    from service.config import get_settings
    from service.db import make_engine
    from service.migrate import current_revision, head_revision

    engine = make_engine(get_settings())
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    print(
        f"catalog revision: {current or 'none'} (code head: {head}{'' if current == head else '; run kf db upgrade'})"
    )
    return 0 if current == head else 1
