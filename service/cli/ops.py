"""Service operations: ``kf serve``, ``kf worker``, ``kf keys``, ``kf gc``, ``kf db upgrade|current``. Settings:
``KF_*``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from service.errors import CatalogNotMigratedError

__all__ = ["add_ops_commands"]


def add_ops_commands(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 in containers)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (use with KF_REDIS_URL)")
    serve.add_argument("--log-level", default=None, help="debug, info, warning or error (default: KF_LOG_LEVEL)")
    serve.set_defaults(handler=_cmd_serve)

    worker = sub.add_parser("worker", help="run an RQ worker for factorization jobs (needs KF_REDIS_URL)")
    worker.add_argument("--queue", action="append", help="queue to listen on (repeatable; default KF_QUEUE)")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument("--name", help="worker name (default: RQ's, host and pid based)")
    worker.add_argument("--max-jobs", type=int, help="exit after this many jobs")
    worker.set_defaults(handler=_cmd_worker)

    keys = sub.add_parser("keys", help="API keys (stored hashed in the catalog)").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--scope", choices=["predict", "admin"], required=True, help="predict: predict and read")
    create.add_argument("--name", default="", help="a label for humans (who or what uses the key)")
    create.set_defaults(handler=_cmd_keys_create)
    keys.add_parser("list", help="list keys (prefix, scope, state; never the key)").set_defaults(handler=_cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by its prefix (effective within 5 s)")
    revoke.add_argument("prefix")
    revoke.set_defaults(handler=_cmd_keys_revoke)

    gc = sub.add_parser("gc", help="delete artifacts nothing in the catalog references (KF_GC_GRACE_S protects new)")
    gc.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    gc.set_defaults(handler=_cmd_gc)

    db = sub.add_parser("db", help="catalog database").add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="apply migrations (KF_DATABASE_URL) up to a revision")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(handler=_cmd_db_upgrade)
    db.add_parser("current", help="print the catalog's revision and the code's head").set_defaults(
        handler=_cmd_db_current
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast (the server stack)
    import uvicorn

    from service.config import get_settings

    os.environ.setdefault("KF_GRPC_HOST", args.host)  # gRPC (KF_GRPC_PORT) listens where HTTP does
    settings = get_settings()  # fail fast on bad KF_* values, before uvicorn starts
    if args.workers > 1 and not settings.redis_url:
        print("kf serve: note: with several workers and no KF_REDIS_URL, every worker runs inline jobs")
    problem = _bind_problem(args.host, settings)
    if problem is not None:
        print(f"kf serve: error: {problem}", file=sys.stderr)
        return 2
    # lazy: keeps `kf --help` fast
    from service.serving.providers import choose_provider

    provider = choose_provider(settings.device)  # KF_DEVICE=cuda without CUDA: refuse here, with the reason
    print(f"kf serve: predictions on {provider.name} ({provider.reason})")
    # lazy: keeps `kf --help` fast
    from service.logs import configure_logging

    level = args.log_level or settings.log_level
    configure_logging(level=level)
    uvicorn.run(
        "service.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=level,
        log_config=None,  # keep our handlers: JSON lines when not on a terminal
        access_log=False,  # service.api.middleware logs every request, with its id, route and duration
    )
    return 0


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _bind_problem(host: str, settings: Any) -> str | None:
    """Why the server must not listen on ``host``: open access (no API keys) beyond this machine."""
    # lazy: keeps `kf --help` fast
    from service.catalog.db import make_engine, make_sessionmaker
    from service.catalog.keys import has_active_keys
    from service.catalog.migrate import check_schema

    engine = make_engine(settings)
    try:
        check_schema(engine)  # an unmigrated catalog: say `kf db upgrade` now, not in a traceback from uvicorn
        with make_sessionmaker(engine)() as session:
            keys = has_active_keys(session=session)
    except CatalogNotMigratedError:
        raise
    except Exception as exc:  # an unreachable catalog: the app's own start-up check explains it
        print(f"kf serve: note: could not read API keys ({type(exc).__name__}); the API will say why it cannot start")
        return None
    finally:
        engine.dispose()
    if keys:
        return None
    if host in _LOOPBACK:
        print(f"kf serve: no API keys in the catalog: open access, listening on {host} only (kf keys create ...)")
        return None
    if settings.allow_anonymous:
        print(f"kf serve: WARNING: no API keys and KF_ALLOW_ANONYMOUS=true: anyone who reaches {host} has full access")
        return None
    return (
        f"no API keys exist, so listening on {host} would give anyone full access; create one with "
        "`kf keys create --scope admin` (then send 'Authorization: Bearer <key>'), listen on 127.0.0.1, "
        "or set KF_ALLOW_ANONYMOUS=true to accept open access"
    )


def _cmd_keys_create(args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast
    from service.catalog.keys import create_key

    with _session() as session:
        row, key = create_key(session=session, scope=args.scope, name=args.name)
        session.commit()
        print(f"created {row.scope} key {row.prefix} ({row.name}); it is shown once, store it now:")
        print(key)
    return 0


def _cmd_keys_list(_args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast
    from service.catalog.keys import list_keys

    with _session() as session:
        rows = list_keys(session=session)
        for r in rows:
            state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
            print(f"{r.prefix}  {r.scope:8s}  {state:24s}  {r.created_at:%Y-%m-%d %H:%M}  {r.name}")
        if not rows:
            print("no API keys: the API is open to anyone who can reach it (kf serve binds 127.0.0.1 only)")
    return 0


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast
    from service.catalog.keys import revoke_key

    with _session() as session:
        row = revoke_key(session=session, prefix=args.prefix)
        session.commit()
        print(f"revoked key {row.prefix} ({row.name})")
    return 0


@contextlib.contextmanager
def _session() -> Iterator[Any]:
    # lazy: keeps `kf --help` fast
    from service.catalog.db import make_engine, make_sessionmaker
    from service.catalog.migrate import check_schema
    from service.config import get_settings

    engine = make_engine(get_settings())
    try:
        check_schema(engine)  # "run kf db upgrade", not "no such table" from the first query
        with make_sessionmaker(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _cmd_gc(args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast
    from service.catalog.artifacts import open_store
    from service.catalog.db import make_engine, make_sessionmaker
    from service.catalog.gc import collect
    from service.config import get_settings

    settings = get_settings()
    engine = make_engine(settings)
    try:
        report = collect(
            factory=make_sessionmaker(engine),
            store=open_store(settings),
            dry_run=args.dry_run,
            grace_s=settings.gc_grace_s,
        )
    finally:
        engine.dispose()
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {report.count} artifact(s), {report.bytes} bytes; {report.skipped} kept (referenced again)")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast
    from service.config import get_settings
    from service.jobs.worker import run_worker
    from service.logs import configure_logging

    configure_logging(level=get_settings().log_level)
    run_worker(queues=args.queue or (), burst=args.burst, name=args.name, max_jobs=args.max_jobs)
    return 0


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast
    from service.catalog.migrate import upgrade
    from service.config import get_settings

    revision = upgrade(get_settings(), args.revision)
    print(f"catalog at revision {revision}")
    return 0


def _cmd_db_current(_args: argparse.Namespace) -> int:
    # lazy: keeps `kf --help` fast
    from service.catalog.db import make_engine
    from service.catalog.migrate import current_revision, head_revision
    from service.config import get_settings

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
