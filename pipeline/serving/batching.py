"""Micro-batching: requests for one model that arrive together are scored in one onnxruntime call.

Each request puts its examples on the model's queue and awaits its share of the outputs. When a
scoring thread is free, the model's worker takes the first waiting request, then gathers more
until the batch holds ``max_examples`` examples or ``max_wait`` seconds have passed since the
first, runs the session once in the thread pool (off the event loop) and hands every request its
rows. While every thread is busy, requests queue and the next batch takes them all: under load,
batches fill without waiting; alone, a request waits at most ``max_wait`` (0: not at all).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Callable

import numpy as np

Outputs = dict[str, np.ndarray]


class MicroBatcher:
    def __init__(self, score: Callable[[np.ndarray], Outputs], executor: Executor, *, max_examples: int,
                 max_wait: float, in_flight: int):
        self.score = score
        self.executor = executor
        self.max_examples = max_examples
        self.max_wait = max_wait
        self.slots = asyncio.Semaphore(in_flight)  # batches being scored at once (the scoring threads)
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[Outputs]]] = asyncio.Queue()
        self.worker = asyncio.get_running_loop().create_task(self._work())
        self.batches = 0  # onnxruntime calls made, and the examples they scored (GET /v1/models shows both)
        self.examples = 0

    async def __call__(self, inputs: np.ndarray) -> Outputs:
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((inputs, future))
        return await future

    async def _gather(self) -> list[tuple[np.ndarray, asyncio.Future[Outputs]]]:
        """The first waiting request, then whatever joins it within ``max_wait``, up to ``max_examples``."""
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        size = len(batch[0][0])
        deadline = loop.time() + self.max_wait
        while size < self.max_examples:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
            batch.append(item)
            size += len(item[0])
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
        return {"batches": self.batches, "examples": self.examples,
                "mean_batch": round(self.examples / self.batches, 2) if self.batches else 0.0}
