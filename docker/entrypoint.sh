#!/bin/sh
# Migrate the catalog (idempotent; concurrent starts serialise on Alembic's version table), then exec the process
# so it receives signals directly. "serve" (default) runs the API on 0.0.0.0:${KF_PORT:-8000}; "worker" runs an
# RQ worker (needs KF_REDIS_URL); anything else is run as a kf subcommand.
set -eu
kf db upgrade
case "${1:-serve}" in
  serve)
    shift || true
    exec kf serve --host 0.0.0.0 --port "${KF_PORT:-8000}" "$@" ;;
  worker)
    shift
    exec kf worker "$@" ;;
  *)
    exec kf "$@" ;;
esac
