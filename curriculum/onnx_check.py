"""Run an ONNX model with onnxruntime on saved inputs; used in a fresh process by export.

A separate process proves the exported file stands alone: nothing from the training
framework is imported here.

    python -m curriculum.onnx_check model.onnx inputs.npz outputs.npz
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from curriculum.io import load_npz, save_npz


def run_onnx(model_path: Path, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    outputs = [session.run(None, {input_name: x[i:i + batch_size].astype(np.float32)})[0]
               for i in range(0, len(x), batch_size)]
    return np.concatenate(outputs)


def main(argv: list[str]) -> None:
    model_path, inputs_path, outputs_path = map(Path, argv)
    save_npz(outputs_path, proba=run_onnx(model_path, load_npz(inputs_path)["x"]))


if __name__ == "__main__":
    main(sys.argv[1:])
