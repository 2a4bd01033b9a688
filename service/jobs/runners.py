"""Who runs jobs: RQ workers on Redis (``KF_REDIS_URL`` set) or an inline runner inside the API process.

Both are thin. The job row is the source of truth; a runner only gets ``run_job(job_id)`` executed somewhere.

- :class:`RqRunner` puts :func:`~service.jobs.run.run_job` on the job's RQ queue; ``kf worker`` processes on any
  host run it. Its background thread recovers jobs whose worker died (no heartbeat) and queued jobs missing from Redis.
- :class:`InlineRunner` starts one ``python -m service.jobs.run JOB_ID`` process per job (up to
  ``KF_INLINE_CONCURRENCY``): a crash, a kill or a cancel in a job can never take the API down. A dispatcher
  thread picks queued jobs from the catalog, so jobs queued while the API was down start when it comes back.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, lazyload, sessionmaker

from service.catalog.db import db_now, session_scope
from service.catalog.leases import fail_unstarted_job, reap_exited_run, reap_lost_jobs
from service.catalog.models import Job, JobStatus
from service.config import Settings, settings_env
from service.jobs.queue import connect, enqueue_rq, rq_status
from service.jobs.run import run_job

__all__ = ["InlineRunner", "RqRunner", "Runner", "make_runner", "recover_rq_jobs"]

log = logging.getLogger(__name__)

_RQ_ACTIVE = ("queued", "started", "deferred", "scheduled")


class Runner(Protocol):
    def start(self) -> None: ...
    def stop(self, *, terminate: bool = True) -> None: ...
    def enqueue(self, job: Job) -> None: ...


def make_runner(settings: Settings, factory: sessionmaker[Session]) -> Runner:
    return RqRunner(settings, factory) if settings.redis_url else InlineRunner(settings, factory)


def recover_rq_jobs(settings: Settings, factory: sessionmaker[Session]) -> list[uuid.UUID]:
    """Requeue jobs whose worker died, and enqueue again queued jobs whose RQ job is gone (Redis flushed or
    restarted without persistence, or a crash between commit and enqueue). Returns the ids enqueued."""
    conn = connect(settings)
    enqueued = []
    with session_scope(factory) as session:  # one transaction: if Redis fails, the reaping is retried too
        requeued = reap_lost_jobs(session=session, timeout_s=settings.heartbeat_timeout_s)
        # Besides those, only jobs queued for a while: a job just submitted may not be enqueued yet.
        settled = db_now(session) - dt.timedelta(seconds=settings.heartbeat_timeout_s)
        candidates = or_(Job.id.in_(requeued), Job.updated_at < settled)
        query = select(Job).where(Job.status == JobStatus.queued.value, candidates)
        for job in session.scalars(query.options(lazyload("*"))):
            # A reaped job's RQ job belongs to the dead worker and still looks "started": never wait for it.
            status = None if job.id in requeued else rq_status(conn, job.rq_job_id)
            if status not in _RQ_ACTIVE:
                enqueue_rq(settings, job, function=run_job, at=db_now(session))
                enqueued.append(job.id)
    if enqueued:
        log.info("enqueued %d job(s) again that had no live RQ job: %s", len(enqueued), enqueued)
    return enqueued


class _Loop:
    """A daemon thread calling ``tick()`` every ``interval`` seconds, or sooner after ``wake()``."""

    def __init__(self, name: str, interval: float) -> None:
        self._interval, self._wake, self._stop = interval, threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop_loop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the loop must survive a database or Redis outage
                log.exception("%s: iteration failed; retrying", self._thread.name)
            self._wake.wait(self._interval)
            self._wake.clear()

    def tick(self) -> None:
        raise NotImplementedError


class RqRunner(_Loop):
    """Jobs go to Redis; the API process only recovers lost jobs in the background."""

    def __init__(self, settings: Settings, factory: sessionmaker[Session]) -> None:
        super().__init__("kf-rq-recovery", settings.heartbeat_interval_s)
        self.settings, self.factory = settings, factory

    def enqueue(self, job: Job) -> None:
        enqueue_rq(self.settings, job, function=run_job)

    def stop(self, *, terminate: bool = True) -> None:
        self.stop_loop()

    def tick(self) -> None:
        recover_rq_jobs(self.settings, self.factory)


class InlineRunner(_Loop):
    """One background process per job, started from the catalog's queue by a dispatcher thread."""

    def __init__(self, settings: Settings, factory: sessionmaker[Session], *, poll_s: float = 0.5) -> None:
        super().__init__("kf-inline-runner", poll_s)
        self.settings, self.factory = settings, factory
        self._procs: dict[uuid.UUID, subprocess.Popen[bytes]] = {}
        self._env = {**os.environ, **settings_env(settings)}
        self._lock = threading.Lock()
        self._last_reap = 0.0
        self._start_failures: dict[uuid.UUID, int] = {}

    def enqueue(self, job: Job) -> None:
        self.wake()

    def running(self) -> dict[uuid.UUID, int]:
        """Job id -> pid of the job processes alive now (for tests and diagnostics)."""
        with self._lock:
            return {k: p.pid for k, p in self._procs.items() if p.poll() is None}

    def stop(self, *, terminate: bool = True) -> None:
        """Stop dispatching; with ``terminate``, ask running jobs to hand themselves back to the queue (SIGTERM)."""
        self.stop_loop()
        with self._lock:
            procs = list(self._procs.values())
        if terminate:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def tick(self) -> None:
        self._reap_exited()
        if time.monotonic() - self._last_reap >= self.settings.heartbeat_interval_s:
            self._last_reap = time.monotonic()
            with session_scope(self.factory) as session:
                reap_lost_jobs(session=session, timeout_s=self.settings.heartbeat_timeout_s)
        free = self.settings.inline_concurrency - len(self.running())
        if free <= 0:
            return
        with self.factory() as session:
            queued = session.scalars(
                select(Job.id)
                .where(Job.status == JobStatus.queued.value)
                .order_by(Job.created_at)
                .limit(free + len(self._procs))
            ).all()
        for job_id in queued:
            if free <= 0:
                break
            with self._lock:
                if job_id in self._procs:
                    continue  # started, not yet claimed
                self._procs[job_id] = subprocess.Popen(
                    [sys.executable, "-m", run_job.__module__, str(job_id)], env=self._env, start_new_session=True
                )
            free -= 1
            log.info("job %s: started process %d", job_id, self._procs[job_id].pid)

    def _reap_exited(self) -> None:
        with self._lock:
            done = {k: p for k, p in self._procs.items() if p.poll() is not None}
            for k in done:
                del self._procs[k]
        host = socket.gethostname()
        for job_id, proc in done.items():
            # A process that died without finishing its job (killed, crashed) gives the job back at once.
            with session_scope(self.factory) as session:
                worker = f"{host}:{proc.pid}"
                if reap_exited_run(session=session, job_id=job_id, worker=worker, returncode=proc.returncode):
                    log.warning("job %s: process %d exited with %d; queued again", job_id, proc.pid, proc.returncode)
                    continue
                job = session.get(Job, job_id, populate_existing=True)
                if proc.returncode != 0 and job is not None and job.status == JobStatus.queued:
                    self._count_start_failure(session, job_id, proc.returncode)

    def _count_start_failure(self, session: Session, job_id: uuid.UUID, returncode: int) -> None:
        # The process died before claiming its job (broken environment): retrying forever would spin.
        n = self._start_failures[job_id] = self._start_failures.get(job_id, 0) + 1
        log.error("job %s: job process exited with %d before starting the job (%d time(s))", job_id, returncode, n)
        if n >= 3:
            error = f"the job process exited with code {returncode} three times before it could start; "
            error += "see the API's log"
            fail_unstarted_job(session=session, job_id=job_id, error=error)
            del self._start_failures[job_id]
