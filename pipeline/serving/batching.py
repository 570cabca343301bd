"""Micro-batching: requests for one model that arrive together are scored in one onnxruntime call.

Each request puts its examples on the model's queue and awaits its share of the outputs. When a
scoring thread is free, the model's worker takes the first waiting request, lets the event loop
read the requests that have already arrived, takes them too (up to ``max_examples`` examples, and
for ``max_wait`` seconds more if set), runs the session once in the thread pool (off the event
loop) and hands every request its rows. While every thread is busy, requests queue and the next
batch takes them all. Under load, batches form without a timer; alone, a request does not wait.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Callable

import numpy as np

Outputs = dict[str, np.ndarray]
SETTLE_TURNS = 2  # event-loop turns without a new request before a batch closes (a request takes two to arrive)


class MicroBatcher:
    def __init__(self, score: Callable[[np.ndarray], Outputs], executor: Executor, *, max_examples: int,
                 max_wait: float, in_flight: int):
        self.score = score
        self.executor = executor
        self.max_examples = max_examples
        self.max_wait = max_wait
        self.slots = asyncio.Semaphore(in_flight)  # batches being scored at once (the scoring threads)
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[Outputs]]] = asyncio.Queue()
        self.held: tuple[np.ndarray, asyncio.Future[Outputs]] | None = None  # starts the next batch
        self.worker = asyncio.get_running_loop().create_task(self._work())
        self.batches = 0  # onnxruntime calls made, and the examples they scored (GET /v1/models shows both)
        self.examples = 0
        self.pending = 0  # requests accepted and not yet answered

    async def __call__(self, inputs: np.ndarray) -> Outputs:
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((inputs, future))
        self.pending += 1
        try:
            return await future
        finally:
            self.pending -= 1

    async def _next(self, timeout: float | None) -> tuple[np.ndarray, asyncio.Future[Outputs]] | None:
        """The request held back from the last batch, else the queue's next (None after ``timeout`` s)."""
        if self.held is not None:
            item, self.held = self.held, None
            return item
        if timeout is None:
            return await self.queue.get()
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout <= 0:
                return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    async def _gather(self) -> list[tuple[np.ndarray, asyncio.Future[Outputs]]]:
        """The first waiting request, then whatever joins it, up to ``max_examples``: first the
        requests the event loop is already reading (it gets ``SETTLE_TURNS`` turns without a new
        one before the batch closes: no timer, so a lone request does not wait), then, if
        ``max_wait`` is set, whatever arrives until it has passed since the first. A request that
        would overflow the batch starts the next one; one bigger than ``max_examples`` is a batch
        of its own."""
        loop = asyncio.get_running_loop()
        batch = [await self._next(None)]
        size = len(batch[0][0])
        deadline = loop.time() + self.max_wait
        idle_turns = 0
        while size < self.max_examples:
            item = await self._next(0 if idle_turns < SETTLE_TURNS else deadline - loop.time())
            if item is None:
                if idle_turns >= SETTLE_TURNS:
                    break
                idle_turns += 1
                await asyncio.sleep(0)  # one turn of the loop: requests already received get read and queued
                continue
            if size + len(item[0]) > self.max_examples:
                self.held = item
                break
            batch.append(item)
            size += len(item[0])
            idle_turns = 0
        return batch

    async def _work(self) -> None:
        """Gather a batch whenever a scoring thread is free: while all are busy, requests queue up
        and the next batch takes them at once."""
        loop = asyncio.get_running_loop()
        while True:
            await self.slots.acquire()
            batch = await self._gather()
            loop.create_task(self._score(batch))

    async def _score(self, batch: list[tuple[np.ndarray, asyncio.Future[Outputs]]]) -> None:
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.score, np.concatenate([inputs for inputs, _ in batch]))
        except Exception as error:  # noqa: BLE001 -- every waiting request gets the error, the batcher lives on
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            self.batches += 1
            start = 0
            for inputs, future in batch:
                stop = start + len(inputs)
                if not future.done():  # a client that hung up cancelled its future
                    future.set_result({name: value[start:stop] for name, value in outputs.items()})
                start = stop
            self.examples += start
        finally:
            self.slots.release()
            for _ in batch:
                self.queue.task_done()

    async def close(self) -> None:
        """Score what is queued, then stop (graceful shutdown)."""
        await self.queue.join()
        self.worker.cancel()
        try:
            await self.worker
        except asyncio.CancelledError:
            pass

    def stats(self) -> dict[str, float]:
        """Calls made, examples scored, their mean batch, and requests waiting for their answer now."""
        return {"batches": self.batches, "examples": self.examples,
                "mean_batch": round(self.examples / self.batches, 2) if self.batches else 0.0,
                "waiting": self.pending}
