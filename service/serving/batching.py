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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MicroBatcher", "SharedBatcher"]

RunFn = Callable[[np.ndarray], Sequence[np.ndarray]]
# (batch, [(start, stop, route) per request]) -> per request, its outputs
RoutedRunFn = Callable[[np.ndarray, list[tuple[int, int, Any]]], list[list[np.ndarray]]]


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
        executor: Executor,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._run = run
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._executor = executor
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._full: asyncio.Event | None = None  # set when the queue holds max_batch rows (ends a wait early)
        self._drain_task: asyncio.Task[None] | None = None
        self._concurrent = False  # did the last batch hold several requests?

    async def submit(self, x: np.ndarray, route: Any = None) -> list[np.ndarray]:
        """The outputs for ``x`` (at most ``max_batch`` rows; the caller validates that)."""
        if len(x) > self.max_batch:
            raise ValueError(f"a request of {len(x)} rows exceeds max_batch={self.max_batch}")
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(x, future, route))
        self._queued_rows += len(x)
        if self._full is not None and self._queued_rows >= self.max_batch:
            self._full.set()
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self._drain())
        return await future

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
        try:
            per_request = await asyncio.get_running_loop().run_in_executor(self._executor, self._answers, x, batch)
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(batch), len(x))
        for p, outputs in zip(batch, per_request, strict=True):
            if not p.future.done():
                p.future.set_result(outputs)

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
        executor: Executor,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        super().__init__(lambda _x: [], max_batch=max_batch, wait_s=wait_s, executor=executor, on_batch=on_batch)
        self._routed = run

    def _answers(self, x: np.ndarray, batch: list[_Pending]) -> list[list[np.ndarray]]:
        spans, start = [], 0
        for p in batch:
            spans.append((start, start + len(p.x), p.route))
            start += len(p.x)
        return self._routed(x, spans)
