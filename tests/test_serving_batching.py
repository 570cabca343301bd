"""Micro-batching on its own: which requests share a call, what each gets back, errors, shutdown."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pipeline.serving.batching import MicroBatcher


class RecordingModel:
    """Doubles its input; records every batch it was called with (from the scoring threads)."""

    def __init__(self, fail_when=None, hold: threading.Event | None = None):
        self.calls: list[np.ndarray] = []
        self.fail_when = fail_when
        self.hold = hold

    def __call__(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        if self.hold is not None:
            self.hold.wait(5)
        self.calls.append(inputs.copy())
        if self.fail_when is not None and self.fail_when(inputs):
            raise RuntimeError("the session failed")
        return {"double": inputs * 2, "sum": inputs.sum(axis=1, keepdims=True)}


def run(coroutine):
    return asyncio.run(coroutine)


def test_requests_arriving_within_the_wait_share_one_call_and_get_their_own_rows():
    model = RecordingModel()

    async def scenario():
        with ThreadPoolExecutor(2) as executor:
            batcher = MicroBatcher(model, executor, max_examples=32, max_wait=0.2, in_flight=2)
            inputs = [np.full((size, 3), float(i)) for i, size in enumerate((1, 2, 1))]
            results = await asyncio.gather(*(batcher(x) for x in inputs))
            await batcher.close()
            return inputs, results, batcher.stats()

    inputs, results, stats = run(scenario())
    assert len(model.calls) == 1 and model.calls[0].shape == (4, 3)
    for x, result in zip(inputs, results):
        np.testing.assert_array_equal(result["double"], x * 2)
        np.testing.assert_array_equal(result["sum"], x.sum(axis=1, keepdims=True))
    assert stats == {"batches": 1, "examples": 4, "mean_batch": 4.0, "waiting": 0}


def test_a_batch_holds_at_most_max_examples_and_a_lone_request_waits_no_longer_than_max_wait():
    model = RecordingModel()

    async def scenario():
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(model, executor, max_examples=4, max_wait=0.05, in_flight=1)
            await asyncio.gather(*(batcher(np.ones((1, 2))) for _ in range(10)))
            loop = asyncio.get_running_loop()
            started = loop.time()
            await batcher(np.ones((1, 2)))
            waited = loop.time() - started
            await batcher.close()
            return waited

    waited = run(scenario())
    assert [len(call) for call in model.calls] == [4, 4, 2, 1]
    assert waited < 1.0  # bounded by max_wait (0.05 s) plus scheduling, never stuck


def test_while_the_threads_are_busy_requests_queue_into_the_next_batch():
    hold = threading.Event()
    model = RecordingModel(hold=hold)

    async def scenario():
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(model, executor, max_examples=32, max_wait=0.0, in_flight=1)
            first = asyncio.ensure_future(batcher(np.zeros((1, 1))))
            await asyncio.sleep(0.05)  # the first call is now running (held)
            rest = [asyncio.ensure_future(batcher(np.ones((1, 1)))) for _ in range(5)]
            await asyncio.sleep(0.05)
            hold.set()
            await asyncio.gather(first, *rest)
            await batcher.close()

    run(scenario())
    assert [len(call) for call in model.calls] == [1, 5]


def test_a_failing_call_fails_its_requests_only_and_the_batcher_goes_on():
    model = RecordingModel(fail_when=lambda x: (x < 0).any())

    async def scenario():
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(model, executor, max_examples=32, max_wait=0.0, in_flight=1)
            with pytest.raises(RuntimeError, match="the session failed"):
                await batcher(-np.ones((1, 2)))
            result = await batcher(np.ones((1, 2)))
            await batcher.close()
            return result

    np.testing.assert_array_equal(run(scenario())["double"], 2 * np.ones((1, 2)))


def test_close_answers_every_queued_request_first():
    hold = threading.Event()
    model = RecordingModel(hold=hold)

    async def scenario():
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(model, executor, max_examples=2, max_wait=0.0, in_flight=1)
            pending = [asyncio.ensure_future(batcher(np.full((1, 1), float(i)))) for i in range(5)]
            await asyncio.sleep(0.05)
            closing = asyncio.ensure_future(batcher.close())
            hold.set()
            await closing
            return [future.result()["double"][0, 0] for future in pending]

    assert run(scenario()) == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_a_request_that_would_overflow_the_batch_starts_the_next_one():
    model = RecordingModel()

    async def scenario():
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(model, executor, max_examples=4, max_wait=0.2, in_flight=1)
            results = await asyncio.gather(*(batcher(np.full((size, 1), float(size))) for size in (3, 2, 6, 1)))
            await batcher.close()
            return results

    results = run(scenario())
    assert [len(call) for call in model.calls] == [3, 2, 6, 1]  # 3+2 > 4; 6 alone (bigger than a batch); then 1
    assert [len(result["double"]) for result in results] == [3, 2, 6, 1]
