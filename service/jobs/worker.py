"""``kf worker``: an RQ worker for factorization jobs, with lost-job recovery built in.

Any number of workers on any hosts consume the same queues. Each job runs in a forked work horse (RQ's model:
memory is returned after every job, and a crash in a job leaves the worker alive). On Linux the horse is tied
to its worker with ``PR_SET_PDEATHSIG``: if the worker is killed, its horse dies with it instead of training on
as an orphan nobody supervises, and the job is recovered from its last checkpoint by another worker.

While idle, a worker wakes every ``KF_HEARTBEAT_INTERVAL_S`` to recover jobs: running jobs whose heartbeat is
older than ``KF_HEARTBEAT_TIMEOUT_S`` are queued again (or failed once their attempts are used up), and queued
jobs missing from Redis are enqueued again.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import redis
from rq import Queue, Worker

from service.catalog.db import make_engine, make_sessionmaker
from service.config import Settings, get_settings, settings_env
from service.jobs.runners import recover_rq_jobs

__all__ = ["KfWorker", "run_worker"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class KfWorker(Worker):
    """RQ's forking worker, plus periodic job recovery and horses that die with their worker."""

    def __init__(self, *args: Any, kf_settings: Settings, **kwargs: Any) -> None:
        self.kf_settings = kf_settings  # before RQ's __init__, which reads dequeue_timeout
        super().__init__(*args, **kwargs)

    @property
    def dequeue_timeout(self) -> int:
        # Wake up regularly while idle so that recovery runs even when no job arrives.
        return max(1, int(self.kf_settings.heartbeat_interval_s))

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        _recover(self.kf_settings)

    def main_work_horse(self, job: Any, queue: Any) -> None:
        parent = os.getppid()
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the worker died before prctl took effect
                os._exit(1)
        super().main_work_horse(job, queue)


def _preload() -> None:
    """Import the training stack once, in the worker: every forked horse starts with it loaded (seconds per job).

    Importing runs no torch kernels, so no OpenMP thread pool exists yet to be broken by fork().
    """
    import service.jobs.run  # noqa: F401
    from kf_core import run_factorization  # noqa: F401  (the lazy name loads kf_core.pipeline and torch)


def _recover(settings: Settings) -> None:
    engine = make_engine(settings)
    try:
        recover_rq_jobs(settings, make_sessionmaker(engine))
    except Exception:  # recovery is best effort; the next round retries
        log.exception("job recovery failed")
    finally:
        engine.dispose()


def run_worker(
    *,
    settings: Settings | None = None,
    queues: Sequence[str] = (),
    burst: bool = False,
    name: str | None = None,
    max_jobs: int | None = None,
) -> bool:
    """Run a worker until stopped (or, with ``burst``, until the queues are empty). Returns whether it worked."""
    if settings is not None:
        # Work horses read their settings from the environment (service.jobs.run.run_job): make them these.
        os.environ.update(settings_env(settings))
        get_settings.cache_clear()
    settings = get_settings()
    if not settings.redis_url:
        raise SystemExit(
            "kf worker needs KF_REDIS_URL (e.g. redis://localhost:6379/0); without it the API runs jobs itself"
        )
    conn = redis.Redis.from_url(settings.redis_url)
    names = list(queues) or [settings.queue]
    _preload()
    _recover(settings)
    worker = KfWorker(
        [Queue(q, connection=conn) for q in names],
        connection=conn,
        name=name,
        maintenance_interval=max(1, int(settings.heartbeat_interval_s)),
        job_monitoring_interval=max(1, int(settings.heartbeat_interval_s)),
        kf_settings=settings,
    )
    log.info("kf worker %s listening on %s", worker.name, ", ".join(names))
    return bool(worker.work(burst=burst, max_jobs=max_jobs, logging_level="INFO"))
