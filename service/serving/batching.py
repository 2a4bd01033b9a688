"""Dynamic micro-batching: concurrent requests share one run.

One :class:`MicroBatcher` per cached fused assembly; one :class:`SharedBatcher` per resident factor set, whose
queue holds requests for any of its task subsets (each carries its route) and whose ``run`` answers every request
of a mixed batch with its own outputs (:meth:`service.serving.resident.ResidentSet.run`).
``await batcher.submit(x)`` queues the request's rows; a drain
task on the event loop concatenates queued requests (up to ``max_batch`` rows, in arrival order), runs the session
on the inference executor (a worker thread: the event loop never blocks on ORT) and hands every request its own
slice of each output.

When to wait: requests that arrive while a batch runs queue up and form the next batch, which runs as soon as the
session is free: under load batches grow with no timer, and the session never idles waiting for stragglers
(bench/serve.py: a 2 ms wait after every run cost a third of the throughput). Only when the session has gone idle
and traffic was concurrent (the last batch held several requests) does the first request wait up to ``wait_s``
(``KF_BATCH_WAIT_MS``) for others to join it, cut short as soon as ``max_batch`` rows are queued. A lone client
never waits.

When to skip the hand-over: a lone request that finds everything idle (nothing queued, no batch running on the
inference thread for any set, the last batch a single request) and whose session's last run took under
``INLINE_MAX_S`` runs on the event loop itself. Handing a run to the inference thread and its answer back costs two
thread wake-ups (about 0.1 ms on 2 cores: an executor round trip alone measures 72 us p50), a large part of a small
model's batch-1 latency; blocking the loop for one short run costs nothing when nobody else is waiting on it. As
soon as a second request arrives while one runs, batches form on the inference thread again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["INLINE_MAX_S", "InferenceLane", "MicroBatcher", "SharedBatcher"]

INLINE_MAX_S = 0.003  # a lone request whose session ran faster than this skips the inference thread

RunFn = Callable[[np.ndarray], Sequence[np.ndarray]]
# (batch, [(start, stop, route) per request]) -> per request, its outputs
RoutedRunFn = Callable[[np.ndarray, list[tuple[int, int, Any]]], list[list[np.ndarray]]]


@dataclass
class InferenceLane:
    """The one worker thread that runs every batcher's sessions in a runtime, and how many batches it holds
    (``busy``: read and written on the event loop only)."""

    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="kf-infer"))
    busy: int = 0

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future[list[np.ndarray]]
    route: Any = None  # SharedBatcher: which outputs this request wants


class MicroBatcher:
    """Batches ``run`` calls for one session; ``run`` maps a ``(N, ...)`` batch to outputs with N rows each."""

    def __init__(
        self,
        run: RunFn,
        *,
        max_batch: int,
        wait_s: float,
        lane: InferenceLane,
        on_batch: Callable[[int, int], None] | None = None,
        inline_max_s: float = INLINE_MAX_S,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._run = run
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._lane = lane
        self._on_batch = on_batch
        self._inline_max_s = inline_max_s
        self._last_run_s = math.inf  # the last batch's run time (unknown: the first run goes to the lane)
        self._claimed = False  # a lone request is looking whether it may run inline
        self.inline_runs = 0
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._full: asyncio.Event | None = None  # set when the queue holds max_batch rows (ends a wait early)
        self._drain_task: asyncio.Task[None] | None = None
        self._concurrent = False  # did the last batch hold several requests?

    async def submit(self, x: np.ndarray, route: Any = None) -> list[np.ndarray]:
        """The outputs for ``x`` (at most ``max_batch`` rows; the caller validates that)."""
        if len(x) > self.max_batch:
            raise ValueError(f"a request of {len(x)} rows exceeds max_batch={self.max_batch}")
        first = False
        if self._idle() and not self._claimed:
            # Let every request the loop already holds reach its submit first: requests read in the same loop
            # iteration as this one (a burst) queue up behind the claim, and then all of them form a batch.
            self._claimed = True
            try:
                await asyncio.sleep(0)
            finally:
                self._claimed = False
            if self._idle():
                return self._inline(x, route)
            first = True  # others queued while this one looked: it goes first in their batch
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        pending = _Pending(x, future, route)
        if first:
            self._queue.appendleft(pending)
        else:
            self._queue.append(pending)
        self._queued_rows += len(x)
        if self._full is not None and self._queued_rows >= self.max_batch:
            self._full.set()
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self._drain())
        return await future

    def _idle(self) -> bool:
        """Whether a request may run inline now: nothing queued or running, the last batch a lone request, the
        last run short (see the module's docstring)."""
        return (
            not self._queue
            and self._last_run_s < self._inline_max_s
            and not self._concurrent
            and self._lane.busy == 0
            and (self._drain_task is None or self._drain_task.done())
        )

    async def _drain(self) -> None:
        idle = True  # the session was idle when this drain started; after a run, whatever queued meanwhile goes now
        while self._queue:
            if idle and self.wait_s > 0 and self._concurrent and self._queued_rows < self.max_batch:
                # One timed wait, cut short by a full batch: no polling (each wake-up costs the event loop time
                # that the requests themselves need).
                self._full = self._full or asyncio.Event()
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), timeout=self.wait_s)
            batch = self._take()
            self._concurrent = len(batch) > 1 or bool(self._queue)
            await self._execute(batch)
            idle = False

    def _inline(self, x: np.ndarray, route: Any) -> list[np.ndarray]:
        """A lone request's run on the event loop (see the module's docstring); errors reach the caller."""
        unused: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()  # answered directly
        outputs = self._timed_answers(x, [_Pending(x, unused, route)])[0]
        self.inline_runs += 1
        if self._on_batch is not None:
            self._on_batch(1, len(x))
        return outputs

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        while self._queue and rows + len(self._queue[0].x) <= self.max_batch:
            p = self._queue.popleft()
            self._queued_rows -= len(p.x)
            if p.future.cancelled():  # the client went away while queued
                continue
            batch.append(p)
            rows += len(p.x)
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
        self._lane.busy += 1
        try:
            loop = asyncio.get_running_loop()
            per_request = await loop.run_in_executor(self._lane.executor, self._timed_answers, x, batch)
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finally:
            self._lane.busy -= 1
        if self._on_batch is not None:
            self._on_batch(len(batch), len(x))
        for p, outputs in zip(batch, per_request, strict=True):
            if not p.future.done():
                p.future.set_result(outputs)

    def _timed_answers(self, x: np.ndarray, batch: list[_Pending]) -> list[list[np.ndarray]]:
        start = time.perf_counter()
        try:
            return self._answers(x, batch)
        finally:
            self._last_run_s = time.perf_counter() - start

    def _answers(self, x: np.ndarray, batch: list[_Pending]) -> list[list[np.ndarray]]:
        """Per request, its slice of every output (runs on the inference executor)."""
        outputs = self._run(x)
        answers, start = [], 0
        for p in batch:
            stop = start + len(p.x)
            answers.append([o[start:stop] for o in outputs])
            start = stop
        return answers


class SharedBatcher(MicroBatcher):
    """One queue for every task subset of a resident factor set: ``submit(x, route)``; ``run(x, spans)``
    computes each request's own outputs from one mixed batch."""

    def __init__(
        self,
        run: RoutedRunFn,
        *,
        max_batch: int,
        wait_s: float,
        lane: InferenceLane,
        on_batch: Callable[[int, int], None] | None = None,
        inline_max_s: float = INLINE_MAX_S,
    ) -> None:
        super().__init__(
            lambda _x: [], max_batch=max_batch, wait_s=wait_s, lane=lane, on_batch=on_batch, inline_max_s=inline_max_s
        )
        self._routed = run

    def _answers(self, x: np.ndarray, batch: list[_Pending]) -> list[list[np.ndarray]]:
        spans, start = [], 0
        for p in batch:
            spans.append((start, start + len(p.x), p.route))
            start += len(p.x)
        return self._routed(x, spans)
