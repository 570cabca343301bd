"""Serving the exported models over HTTP: :mod:`.models` (finding and loading them), :mod:`.batching`
(micro-batching), :mod:`.app` (the FastAPI app and the try-it page), :mod:`.process` (the server
as a child process, for the benchmark and the tests)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    """How the server scores. ``micro_batch``: most examples per onnxruntime call for models that
    batch (images); 1 turns micro-batching off. ``max_wait_ms``: how long the first request of a
    batch may wait for company beyond the requests the server is already reading (0: not at all;
    the event loop's timers tick in whole milliseconds). ``max_request_examples``: the most
    examples one request may carry.
    ``threads``: onnxruntime intra-op threads per call; ``workers``: calls at once.
    ``watch_s``: how often the workspace is checked for a new ``dvc repro`` (None: only ``POST /v1/reload``)."""

    micro_batch: int = 32
    max_wait_ms: float = 0.0
    max_request_examples: int = 64
    max_body_bytes: int = 8 * 1024 * 1024
    threads: int = 1
    workers: int = 2
    watch_s: float | None = 2.0

    def __post_init__(self) -> None:
        problems = [f"{name} must be at least 1, got {getattr(self, name)}"
                    for name in ("micro_batch", "max_request_examples", "max_body_bytes", "threads", "workers")
                    if getattr(self, name) < 1]
        problems += [f"{name} must be positive, got {getattr(self, name)}"
                     for name in ("max_wait_ms", "watch_s") if getattr(self, name) is not None and getattr(self, name) < 0]
        if problems:
            raise ValueError("serve-models: " + "; ".join(problems))
