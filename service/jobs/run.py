"""Run one factorization job, given only its id: the function RQ workers call and inline job processes run.

    python -m service.jobs.run JOB_ID

A run claims the job (see ``service.catalog.leases``), fetches the teacher and data from the artifact store (verified),
restores the last stored checkpoint if there is one, and trains through kf_core's ``run_factorization`` with a
callback that writes progress, polls for cancellation and uploads every checkpoint. A heartbeat thread keeps the
job visibly alive during long steps and enforces cancellation: if the training loop has not stopped
``KF_CANCEL_GRACE_S`` after a cancel was seen, the process marks the job cancelled and exits.

Outcomes: succeeded (factor set registered, see ``service.jobs.register``); cancelled; failed at once for errors a
retry cannot fix (bad config or data, corrupt artifacts); queued again for anything else while attempts remain.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from kf_core import DistConfig, Recipe, process_group, run_extension, run_factorization
from kf_core.errors import CheckpointError, KfError, TrainingCancelled
from service.catalog import queries as catalog
from service.catalog.artifacts import open_store
from service.catalog.checkpoints import drop_checkpoint
from service.catalog.db import make_engine, make_sessionmaker, session_scope
from service.catalog.leases import (
    Lease,
    cancel_requested,
    claim_job,
    finish_run,
    release_run,
    retry_or_fail_run,
    touch_run,
)
from service.catalog.models import EXTEND_KEY, Artifact, JobStatus
from service.catalog.teachers import SUFFIX
from service.config import Settings, get_settings
from service.errors import ArtifactError, InvalidInputError, LeaseLostError
from service.jobs.base_set import fetch_base_parts
from service.jobs.peers import job_threads, open_job_teacher, peer_processes
from service.jobs.progress import JobProgress, RunContext, RunSignals
from service.jobs.queue import enqueue_rq
from service.jobs.register import register_factor_set
from service.jobs.spec import ARTIFACT_PREFIX
from service.logs import configure_logging

__all__ = ["run_job"]

log = logging.getLogger("service.jobs.run")


class _Interrupted(BaseException):
    """SIGTERM: the process is being shut down; hand the job back rather than fail it."""


def run_job(job_id: str) -> str:
    """Run the job ``job_id`` to an outcome; returns the job's status afterwards (or ``skipped``)."""
    settings = get_settings()
    engine = make_engine(settings)
    try:
        return _Run(settings, make_sessionmaker(engine), uuid.UUID(job_id)).run()
    finally:
        engine.dispose()


class _Heartbeat(threading.Thread):
    """Proves the run alive every ``heartbeat_interval_s`` and turns an ignored cancel into a hard stop."""

    def __init__(self, run: _Run, lease: Lease) -> None:
        super().__init__(name=f"heartbeat-{lease.job_id}", daemon=True)
        self.run_, self.lease, self.stop = run, lease, threading.Event()

    def run(self) -> None:
        s, signals = self.run_.settings, self.run_.signals
        tick = min(1.0, s.heartbeat_interval_s)  # cancel is polled every second, whatever the heartbeat interval
        last_beat = time.monotonic()
        while not self.stop.wait(tick):
            try:
                with session_scope(self.run_.factory) as session:
                    if time.monotonic() - last_beat >= s.heartbeat_interval_s:
                        cancel = touch_run(session=session, lease=self.lease).cancel_requested
                        last_beat = time.monotonic()
                    else:
                        cancel = cancel_requested(session=session, lease=self.lease)
                if cancel:
                    signals.cancel.set()
            except LeaseLostError:
                signals.lost.set()
                return
            except Exception:  # a database hiccup: the next beat retries; the timeout is many beats long
                log.warning("job %s: heartbeat failed", self.lease.job_id, exc_info=True)
            seen = signals.cancel.seen_at
            if seen is not None and time.monotonic() - seen > s.cancel_grace_s and not self.stop.is_set():
                self._hard_stop(time.monotonic() - seen)

    def _hard_stop(self, waited: float) -> None:
        log.warning("job %s: still running %.1f s after cancel; stopping the process", self.lease.job_id, waited)
        try:
            with session_scope(self.run_.factory) as session:
                finish_run(session=session, lease=self.lease, status=JobStatus.cancelled, stage="cancelled")
            self.run_.drop_checkpoint()
        finally:
            os._exit(0)  # the main thread is stuck in native code; nothing of this run is worth keeping


class _Run:
    def __init__(self, settings: Settings, factory: sessionmaker[Session], job_id: uuid.UUID) -> None:
        self.settings, self.factory, self.job_id = settings, factory, job_id
        self.store = open_store(settings)
        self.signals = RunSignals()
        self.lease: Lease | None = None

    def run(self) -> str:
        worker = f"{socket.gethostname()}:{os.getpid()}"
        with session_scope(self.factory) as session:
            lease = claim_job(session=session, job_id=self.job_id, worker=worker)
        if lease is None:
            log.info("job %s is not queued (taken, cancelled or finished); nothing to do", self.job_id)
            return "skipped"
        self.lease = lease
        log.info("job %s: attempt %d started by %s", self.job_id, lease.attempt, worker)
        heartbeat = _Heartbeat(self, lease)
        heartbeat.start()
        previous = _on_sigterm()
        try:
            return self._outcome(lease)
        finally:
            heartbeat.stop.set()
            signal.signal(signal.SIGTERM, previous)

    @contextlib.contextmanager
    def _work_dir(self) -> Iterator[Path]:
        """A scratch directory for this run only, removed afterwards (checkpoints live in the artifact store)."""
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{self.job_id}-", dir=self.settings.work_dir))
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _outcome(self, lease: Lease) -> str:
        try:
            with self._work_dir() as work:
                self._execute(lease, work)
            self.drop_checkpoint()
            return JobStatus.succeeded.value
        except LeaseLostError as e:
            if self.signals.cancel.is_set():
                return self._finish(lease, JobStatus.cancelled, None)
            log.warning("job %s: %s; stopping without writing", self.job_id, e)
            return "lost"
        except TrainingCancelled:
            return self._finish(lease, JobStatus.cancelled, None)
        except _Interrupted:
            try:
                with session_scope(self.factory) as session:
                    status = release_run(session=session, lease=lease, reason="worker shut down")
            except LeaseLostError:
                return "lost"  # it finished (or was taken over) just before the signal
            if status == JobStatus.queued:
                self._requeue_if_rq()
            else:
                self.drop_checkpoint()
            return status.value
        except (KfError, InvalidInputError, ArtifactError) as e:
            if isinstance(e, CheckpointError):
                self.drop_checkpoint()  # it can never resume this run; the next submission starts clean
            return self._finish(lease, JobStatus.failed, f"{type(e).__name__}: {e}")
        except Exception as e:
            log.exception("job %s: attempt %d failed", self.job_id, lease.attempt)
            with session_scope(self.factory) as session:
                status = retry_or_fail_run(session=session, lease=lease, error=f"{type(e).__name__}: {e}")
            if status == JobStatus.queued:
                self._requeue_if_rq()
            return status.value

    def _finish(self, lease: Lease, status: JobStatus, error: str | None) -> str:
        try:
            with session_scope(self.factory) as session:
                finish_run(session=session, lease=lease, status=status, stage=status.value, error=error)
        except LeaseLostError:
            return "lost"
        if status == JobStatus.cancelled:
            self.drop_checkpoint()
        log.info("job %s: %s%s", self.job_id, status.value, f" ({error})" if error else "")
        return status.value

    def _execute(self, lease: Lease, work: Path) -> None:
        self._stage(lease, "preparing")
        with self.factory() as session:
            job = catalog.get_job(session=session, job_id=self.job_id)
            teacher_row, recipe_doc = job.teacher, dict(job.recipe)
            checkpoint = job.checkpoint_artifact_id and session.get(Artifact, job.checkpoint_artifact_id)
            checkpoint_step = job.checkpoint_step
            data_sha = (recipe_doc["data"].get("path") or "").removeprefix(ARTIFACT_PREFIX)
            teacher_sha, teacher_size = teacher_row.artifact.sha256, teacher_row.artifact.size_bytes
        teacher_path = self.store.copy_to(teacher_sha, work / f"teacher{SUFFIX[teacher_row.format]}", size=teacher_size)
        recipe = Recipe.from_json(recipe_doc)
        if recipe.data.source == "npz":
            local = self.store.copy_to(data_sha, work / "data.npz")
            recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, path=str(local)))
        teacher_spec: dict[str, Any] = {
            "path": str(teacher_path),
            "format": teacher_row.format,
            "outputs": teacher_row.outputs,
            "features": teacher_row.features,
            "input_shape": teacher_row.input_shape if teacher_row.format == "torchscript" else None,
            "class_names": teacher_row.class_names,
        }
        tasks = [t.name for t in recipe.tasks]
        spec = {"recipe": recipe.to_json(), "tasks": tasks, "teacher": teacher_spec}  # what every rank loads
        teacher = open_job_teacher(spec)
        run_dir = work / "run"
        if checkpoint:
            self.store.copy_to(checkpoint.sha256, run_dir / "checkpoint.pt", size=checkpoint.size_bytes)
            log.info("job %s: resuming from the checkpoint at step %s", self.job_id, checkpoint_step)
        context = RunContext(self.factory, self.store, self.signals, self.settings.progress_interval_s)
        progress = JobProgress(context, lease)
        if EXTEND_KEY in recipe_doc:
            report = self._extend(recipe_doc[EXTEND_KEY], recipe, teacher, work, run_dir, progress)
            if self.signals.cancel.is_set():
                raise LeaseLostError("cancelled after training")
            self._stage(lease, "registering")
            factor_set = register_factor_set(
                factory=self.factory, store=self.store, lease=lease, run_dir=run_dir, report=report
            )
            log.info("job %s: registered extended factor set %s v%d", self.job_id, factor_set.name, factor_set.version)
            return
        n = recipe.train.processes
        if self.settings.torch_threads or n > 1:
            torch.set_num_threads(job_threads(self.settings, n))
        # This process is rank 0 of the group (alone when n == 1): it keeps the lease, progress and registration.
        with peer_processes(self.settings, spec, work, n) as port:
            group = DistConfig(rank=0, world_size=n, master_port=port, timeout_s=self.settings.dist_timeout_s)
            with process_group(group, device=recipe.train.device) as dist:
                report = run_factorization(recipe, teacher, run_dir, task_names=tasks, callbacks=[progress], dist=dist)
        if self.signals.cancel.is_set():
            raise LeaseLostError("cancelled after training")
        self._stage(lease, "registering")
        factor_set = register_factor_set(
            factory=self.factory, store=self.store, lease=lease, run_dir=run_dir, report=report
        )
        log.info("job %s: registered factor set %s v%d", self.job_id, factor_set.name, factor_set.version)

    def _extend(
        self, base: dict[str, Any], recipe: Any, teacher: Any, work: Path, run_dir: Path, progress: JobProgress
    ) -> dict[str, Any]:
        """Train the new tasks against the base set's frozen CKN; the report lists every task's metrics."""
        with self.factory() as session:
            old = fetch_base_parts(
                session=session, store=self.store, factor_set_id=base["factor_set_id"], directory=work / "base"
            )
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        report = run_extension(recipe, teacher, work / "base", run_dir, tasks=list(recipe.tasks), callbacks=[progress])
        report["tasks"] = {**old["tasks"], **report["tasks"]}  # the new version's metrics cover every task
        report["extended_from"] = {**report["extended_from"], "name": old["name"], "version": old["version"]}
        (run_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        return report

    def _stage(self, lease: Lease, stage: str) -> None:
        with session_scope(self.factory) as session:
            if touch_run(session=session, lease=lease, stage=stage).cancel_requested:
                self.signals.cancel.set()
        if self.signals.cancel.is_set():
            raise TrainingCancelled(f"cancelled while {stage}")

    def drop_checkpoint(self) -> None:
        """Delete the job's stored checkpoint: after success or cancel it can never be resumed from."""
        try:
            with session_scope(self.factory) as session:
                sha = drop_checkpoint(session=session, job_id=self.job_id)
            if sha is not None:
                self.store.delete(sha)
        except Exception:  # cleanup only: a leftover checkpoint wastes space but harms nothing
            log.warning("job %s: could not delete its checkpoint", self.job_id, exc_info=True)

    def _requeue_if_rq(self) -> None:
        if self.settings.redis_url:
            with session_scope(self.factory) as session:
                enqueue_rq(self.settings, catalog.get_job(session=session, job_id=self.job_id), function=run_job)


def _on_sigterm() -> Any:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise _Interrupted()

    if threading.current_thread() is not threading.main_thread():
        return signal.getsignal(signal.SIGTERM)
    return signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m service.jobs.run JOB_ID", file=sys.stderr)
        return 2

    configure_logging(level=get_settings().log_level)
    status = run_job(args[0])
    return 0 if status in ("succeeded", "cancelled", "skipped", "queued", "lost") else 1


if __name__ == "__main__":
    sys.exit(main())
