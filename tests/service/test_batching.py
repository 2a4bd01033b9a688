"""The micro-batcher: concurrent requests share runs, each gets exactly its own rows, errors reach everyone."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import numpy as np
import pytest

from service.serving.batching import InferenceLane, MicroBatcher, SharedBatcher


class Recorder:
    """A model stand-in that records the batch sizes it ran: y = 2x and the row sums."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.threads: list[int] = []  # which thread ran each batch
        self.gate = gate

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        if self.gate is not None:
            self.gate.wait(5)
        self.sizes.append(len(x))
        self.threads.append(threading.get_ident())
        return [2 * x, x.reshape(len(x), -1).sum(axis=1)]


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_a_lone_request_runs_alone_and_gets_its_outputs() -> None:
    rec = Recorder()

    async def main() -> list[np.ndarray]:
        with contextlib.closing(InferenceLane()) as lane:
            b = MicroBatcher(rec, max_batch=8, wait_s=0.05, lane=lane)
            return await b.submit(np.ones((2, 3), np.float32))

    out = _run(main())
    assert isinstance(out, list)
    np.testing.assert_array_equal(out[0], 2 * np.ones((2, 3)))
    np.testing.assert_array_equal(out[1], [3.0, 3.0])
    assert rec.sizes == [2]


def test_requests_queued_while_a_batch_runs_form_the_next_batch_and_are_split_back() -> None:
    gate = threading.Event()
    rec = Recorder(gate)

    async def main() -> list[list[np.ndarray]]:
        with contextlib.closing(InferenceLane()) as lane:
            b = MicroBatcher(rec, max_batch=8, wait_s=0.0, lane=lane)
            first = asyncio.create_task(b.submit(np.full((1, 2), -1.0, np.float32)))
            await asyncio.sleep(0.05)  # the first batch is running (held by the gate)
            rest = [asyncio.create_task(b.submit(np.full((i % 3 + 1, 2), i, np.float32))) for i in range(6)]
            await asyncio.sleep(0.05)
            gate.set()
            return [await first, *[await r for r in rest]]

    results = _run(main())
    assert isinstance(results, list)
    assert rec.sizes[0] == 1
    assert sum(rec.sizes) == 1 + sum(i % 3 + 1 for i in range(6))
    assert len(rec.sizes) < 7 and max(rec.sizes) <= 8  # batched, never over max_batch
    for i, out in enumerate(results[1:]):
        np.testing.assert_array_equal(out[0], np.full((i % 3 + 1, 2), 2 * i))
        np.testing.assert_array_equal(out[1], np.full(i % 3 + 1, 2 * i))


def test_a_failing_run_fails_every_request_of_its_batch_and_the_batcher_goes_on() -> None:
    calls = {"n": 0}

    def flaky(x: np.ndarray) -> list[np.ndarray]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return [x]

    async def main() -> tuple[list[object], list[np.ndarray]]:
        with contextlib.closing(InferenceLane()) as lane:
            b = MicroBatcher(flaky, max_batch=4, wait_s=0.0, lane=lane)
            got = await asyncio.gather(*(b.submit(np.zeros((1, 1))) for _ in range(3)), return_exceptions=True)
            return got, await b.submit(np.ones((1, 1)))

    failed, ok = _run(main())  # type: ignore[misc]
    assert any(isinstance(e, RuntimeError) for e in failed)
    np.testing.assert_array_equal(ok[0], np.ones((1, 1)))


def test_a_request_over_max_batch_is_refused() -> None:
    async def main() -> None:
        with contextlib.closing(InferenceLane()) as lane:
            await MicroBatcher(Recorder(), max_batch=2, wait_s=0, lane=lane).submit(np.zeros((3, 1)))

    with pytest.raises(ValueError, match="max_batch=2"):
        _run(main())


def test_the_shared_batcher_runs_mixed_routes_in_one_batch_and_each_request_gets_its_own_answer() -> None:
    calls: list[list[tuple[int, int, str]]] = []

    def run(x: np.ndarray, spans: list[tuple[int, int, str]]) -> list[list[np.ndarray]]:
        calls.append(spans)
        # A per-route answer: the rows of the span times the route's factor.
        return [[x[a:b] * {"double": 2, "triple": 3}[route]] for a, b, route in spans]

    async def main() -> list[list[np.ndarray]]:
        with contextlib.closing(InferenceLane()) as lane:
            b = SharedBatcher(run, max_batch=16, wait_s=0.0, lane=lane)
            return list(
                await asyncio.gather(
                    b.submit(np.full((2, 1), 1.0, np.float32), "double"),
                    b.submit(np.full((3, 1), 5.0, np.float32), "triple"),
                    b.submit(np.full((1, 1), 7.0, np.float32), "double"),
                )
            )

    out = _run(main())
    assert isinstance(out, list)
    assert calls == [[(0, 2, "double"), (2, 5, "triple"), (5, 6, "double")]]  # one run for three routes
    np.testing.assert_array_equal(out[0][0], [[2.0], [2.0]])
    np.testing.assert_array_equal(out[1][0], [[15.0]] * 3)
    np.testing.assert_array_equal(out[2][0], [[14.0]])


def test_a_lone_request_skips_the_inference_thread_only_when_everything_is_idle_and_the_run_is_short() -> None:
    gate = threading.Event()
    gate.set()
    rec = Recorder(gate)

    async def main() -> tuple[int, MicroBatcher, MicroBatcher]:
        loop_thread = threading.get_ident()
        with contextlib.closing(InferenceLane()) as lane:
            b = MicroBatcher(rec, max_batch=8, wait_s=0.0, lane=lane)
            slow = MicroBatcher(Recorder(), max_batch=8, wait_s=0.0, lane=lane, inline_max_s=0.0)
            for _ in range(3):  # the first run is timed on the lane, the next two run inline
                out = await b.submit(np.ones((1, 2), np.float32))
                np.testing.assert_array_equal(out[0], [[2.0, 2.0]])
            assert rec.threads[0] != loop_thread and rec.threads[1:] == [loop_thread] * 2
            # A batch in flight on the shared lane (another batcher's): a lone request queues and goes to the lane.
            gate.clear()
            other = MicroBatcher(Recorder(gate), max_batch=8, wait_s=0.0, lane=lane)
            held = asyncio.create_task(other.submit(np.ones((1, 2), np.float32)))
            await asyncio.sleep(0.05)
            assert lane.busy == 1
            lone = asyncio.create_task(b.submit(np.ones((1, 2), np.float32)))
            await asyncio.sleep(0.05)
            gate.set()
            await held, await lone
            assert rec.threads[3] != loop_thread
            # Concurrent traffic (a burst the loop holds at once): one batch on the lane, and the next lone request
            # after it runs there too; once a lone request ran alone, inline again.
            burst = await asyncio.gather(*(b.submit(np.full((1, 2), i, np.float32)) for i in range(4)))
            assert [o[0][0, 0] for o in burst] == [0.0, 2.0, 4.0, 6.0] and rec.sizes[-1] == 4
            await b.submit(np.ones((1, 2), np.float32))
            await b.submit(np.ones((1, 2), np.float32))
            for _ in range(3):
                await slow.submit(np.ones((1, 2), np.float32))  # never inline: inline_max_s=0
            return loop_thread, b, slow

    loop_thread, b, slow = _run(main())  # type: ignore[misc]
    assert loop_thread not in rec.threads[4:-1] and rec.threads[-1] == loop_thread
    assert (b.inline_runs, slow.inline_runs) == (3, 0)
