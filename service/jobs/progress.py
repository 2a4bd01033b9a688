"""The training callback of a job run: progress to the job row, cancellation from it, checkpoints to the store.

Writes are throttled to one per ``KF_PROGRESS_INTERVAL_S`` (plus one per epoch), each doubling as a cancel poll;
between writes the callback reads the flags the heartbeat thread sets, so a cancel is honoured at the next step
without a database round trip per step.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from kf_core import Callback, TrainState
from service.catalog.artifacts import ArtifactStore
from service.catalog.checkpoints import is_recorded, replace_checkpoint
from service.catalog.db import session_scope
from service.catalog.leases import Lease, touch_run
from service.errors import LeaseLostError
from service.jobs.register import delete_quietly

__all__ = ["CancelFlag", "JobProgress", "RunContext", "RunSignals"]

log = logging.getLogger(__name__)


class CancelFlag:
    """A threading.Event that remembers when it was first set (for the hard-stop deadline)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.seen_at: float | None = None

    def set(self) -> None:
        if self.seen_at is None:
            self.seen_at = time.monotonic()
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class RunSignals:
    """Flags the heartbeat thread raises for the training thread."""

    def __init__(self) -> None:
        self.cancel = CancelFlag()
        self.lost = threading.Event()


@dataclass(frozen=True)
class RunContext:
    """What the callback needs from the run that owns it, and nothing else."""

    factory: sessionmaker[Session]  # opens the catalog sessions progress and checkpoints are written in
    store: ArtifactStore  # where checkpoints go
    signals: RunSignals  # cancel and lost flags, raised by the run's heartbeat thread
    progress_interval_s: float  # at most one progress write per this many seconds (plus one per epoch)


class JobProgress(Callback):
    """kf_core training callback bound to one job run."""

    def __init__(self, run: RunContext, lease: Lease) -> None:
        self.run, self.lease = run, lease
        self._last_write = 0.0

    def on_train_start(self, state: TrainState) -> None:
        resumed = state.global_step if state.global_step > 0 else None  # the loop restored a checkpoint
        if resumed is not None:
            log.info("job %s: resumed at epoch %d, step %d", self.lease.job_id, state.epoch, state.global_step)
        self._write(
            state,
            stage="training",
            epochs=state.epochs,
            steps_total=state.steps_per_epoch * state.epochs,
            resumed_from_step=resumed,
        )

    def on_step_end(self, state: TrainState) -> None:
        self._check(state)
        if time.monotonic() - self._last_write >= self.run.progress_interval_s:
            self._write(state, metrics=state.metrics)

    def on_epoch_end(self, state: TrainState) -> None:
        row = state.history[-1] if state.history else state.metrics
        # After the last epoch: evaluation, ONNX export and the assembly check come next.
        self._write(state, metrics=row, stage="exporting" if state.epoch >= state.epochs else None)

    def on_checkpoint(self, state: TrainState, path: Path) -> None:
        """Store the checkpoint, point the job at it, and delete the one it replaces."""
        stored = self.run.store.put_file(path)
        try:
            with session_scope(self.run.factory) as session:
                old = replace_checkpoint(session=session, lease=self.lease, stored=stored, step=state.global_step)
        except BaseException:  # the row was not written (a lost lease, an interrupt): the file is not kept
            self._forget(stored.sha256)
            raise
        if old is not None:
            self.run.store.delete(old)

    def _forget(self, sha256: str) -> None:
        """Delete a stored checkpoint whose row was never written, unless a row holds the same content after all;
        when the catalog cannot say, the collector (``kf gc``) deletes the file once past its grace period."""
        try:
            with self.run.factory() as session:
                recorded = is_recorded(session=session, sha256=sha256)
        except Exception:
            log.warning("job %s: could not check its unrecorded checkpoint %s", self.lease.job_id, sha256)
            return
        if not recorded:
            delete_quietly(self.run.store, sha256, what=f"job {self.lease.job_id}'s unrecorded checkpoint")

    def _check(self, state: TrainState) -> None:
        if self.run.signals.lost.is_set():
            raise LeaseLostError(f"job {self.lease.job_id}: this run lost the job")
        if self.run.signals.cancel.is_set():
            state.cancel = True

    def _write(
        self,
        state: TrainState,
        *,
        metrics: dict[str, float] | None = None,
        stage: str | None = None,
        epochs: int | None = None,
        steps_total: int | None = None,
        resumed_from_step: int | None = None,
    ) -> None:
        """One progress write (epoch, step and fraction always; the rest when given), doubling as a cancel poll."""
        with session_scope(self.run.factory) as session:
            touch = touch_run(
                session=session,
                lease=self.lease,
                stage=stage,
                epochs=epochs,
                steps_total=steps_total,
                epoch=state.epoch,
                step=state.global_step,
                progress=_fraction(state),
                metrics=None if metrics is None else {k: float(v) for k, v in metrics.items()},
                resumed_from_step=resumed_from_step,
            )
            if touch.cancel_requested:
                self.run.signals.cancel.set()
        self._last_write = time.monotonic()
        self._check(state)


def _fraction(state: TrainState) -> float:
    total = state.steps_per_epoch * state.epochs
    return min(1.0, state.global_step / total) if total else 0.0
