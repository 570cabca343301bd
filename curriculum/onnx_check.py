"""Run an ONNX model with onnxruntime on saved inputs; used in a fresh process by export.

A separate process proves the exported file stands alone: nothing from the training
framework is imported here. A graph whose batch axis is a fixed number runs that many examples
at a time. Inputs are matched to the graph's inputs by name (or, for a
one-input graph, taken as that input); every output is returned, named positionally with
the names given on the command line (the task's output names) or the graph's own.

    python -m curriculum.onnx_check model.onnx inputs.npz outputs.npz [output_name ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from curriculum.io import load_npz, save_npz


def feeds(session: ort.InferenceSession, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [graph_input.name for graph_input in session.get_inputs()]
    if set(names) <= set(inputs):
        return {name: inputs[name] for name in names}
    if len(names) == 1 and len(inputs) == 1:
        return {names[0]: next(iter(inputs.values()))}
    raise ValueError(f"the graph takes inputs {names}; given {sorted(inputs)}")


def run_onnx(model_path: Path, inputs: dict[str, np.ndarray], output_names: list[str] | None = None,
             batch_size: int = 1024) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    graph_outputs = [output.name for output in session.get_outputs()]
    names = output_names or graph_outputs
    if len(names) != len(graph_outputs):
        raise ValueError(f"{model_path}: the graph has outputs {graph_outputs}, expected {names}")
    feed = feeds(session, inputs)
    rows = len(next(iter(feed.values())))
    fixed = session.get_inputs()[0].shape[0]
    if isinstance(fixed, int):  # a graph of one batch size (exported so on purpose) runs batch by batch
        starts = list(range(0, rows, fixed))
    else:  # The first example runs alone: a graph that kept its traced batch size fails here, not in a server.
        starts = [0, *range(min(rows, 1), rows, batch_size)]
    bounds = zip(starts, [*starts[1:], rows])
    batches = [session.run(None, {name: value[start:stop] for name, value in feed.items()})
               for start, stop in bounds if stop > start]
    return {name: np.concatenate([batch[k] for batch in batches]) for k, name in enumerate(names)}


def main(argv: list[str]) -> None:
    model_path, inputs_path, outputs_path, *output_names = argv
    save_npz(outputs_path, **run_onnx(Path(model_path), load_npz(inputs_path), output_names or None))


if __name__ == "__main__":
    main(sys.argv[1:])
