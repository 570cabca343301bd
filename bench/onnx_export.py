"""torch's two ONNX exporters side by side: the dynamo exporter vs the TorchScript-based one.

The torch back end exports ONNX with ``dynamo=False`` (curriculum/frameworks/torch_backend.py);
this measures why, on untrained models of the curriculum's shapes: the forecasting LSTM and
attention models and the transfer project's MobileNetV2 trunk+top. Both exports get the same
module, example and dynamic batch axis, and both files are checked against torch at batch 1.

    python bench/onnx_export.py [--repeats 2]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import torch
import torchvision

from curriculum.backbones import transfer
from curriculum.models import torch_forecast

FORECAST_SPEC = {"n_features": 6, "horizon": 7}
FORECAST_TRAIN = SimpleNamespace(units=32, layers=2, dropout=0.0, heads=2)


def models() -> dict[str, tuple[torch.nn.Module, np.ndarray]]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((2, 56, 6), dtype=np.float32)
    images = rng.random((2, 28, 28, 1), dtype=np.float32)
    state_dict = torchvision.models.mobilenet_v2(weights=None).state_dict()  # untrained: a timing workload
    mobilenet = torch.nn.Sequential(transfer.torch_stem(state_dict, 96, 12),
                                    transfer.torch_top(state_dict, 12, n_classes=10))
    return {
        "forecasting lstm": (torch_forecast.build_lstm(FORECAST_SPEC, FORECAST_TRAIN).eval(), windows),
        "forecasting attention": (torch_forecast.build_attention(FORECAST_SPEC, FORECAST_TRAIN).eval(), windows),
        "mobilenet_v2 trunk+top": (mobilenet.eval(), images),
    }


def export_seconds(model: torch.nn.Module, x: np.ndarray, path: Path, dynamo: bool) -> float:
    example = (torch.from_numpy(x),)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("onnxscript").setLevel(logging.ERROR)
        if dynamo:
            torch.onnx.export(model, example, path, dynamo=True, input_names=["x"], verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        else:
            torch.onnx.export(model, example, path, dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}})
    seconds = time.perf_counter() - started
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(x[:1])).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x[:1]})[0], expected, atol=1e-4)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="exports per exporter and model (best is kept)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"{'model':24s} {'dynamo s':>9s} {'torchscript s':>14s} {'ratio':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, x) in models().items():
            best = {dynamo: min(export_seconds(model, x, Path(tmp) / f"{dynamo}.onnx", dynamo)
                                for _ in range(args.repeats)) for dynamo in (True, False)}
            print(f"{name:24s} {best[True]:9.2f} {best[False]:14.2f} {best[True] / best[False]:6.1f}x")


if __name__ == "__main__":
    main()
