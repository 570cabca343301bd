"""Stage 6: export to ONNX and the framework's native format, then check parity.

The ONNX file is run with onnxruntime in a fresh process on the whole test split and must
agree with the trained model: identical predicted labels and probabilities within
``parity_atol``. Otherwise the stage fails and the export is not accepted.

When preprocessing standardised the inputs it keeps the fitted ``input_mean``/``input_scale``
in the splits; then the back end folds them into the exported models, which take raw rows,
and the check feeds them the raw test rows (``x_test * scale + mean``) while the reference is
the trained model on the standardised rows.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from curriculum import metrics
from curriculum.io import load_npz, save_npz, write_json
from curriculum.params import load_project_params
from curriculum.trained import load_trained
from stages.cli import stage_parser
from stages.preprocess import SPLITS_FILE


def onnx_in_fresh_process(model_path: Path, x: np.ndarray) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        save_npz(inputs, x=x)
        subprocess.run([sys.executable, "-m", "curriculum.onnx_check", str(model_path), str(inputs), str(outputs)], check=True)
        return load_npz(outputs)["proba"]


def parity_report(reference: np.ndarray, exported: np.ndarray, task: str) -> dict[str, float | bool]:
    same_labels = metrics.predicted_labels(reference, task) == metrics.predicted_labels(exported, task)
    return {
        "max_abs_diff": float(np.abs(reference - exported).max()),
        "argmax_agreement": float(same_labels.mean()),
        "identical_argmax": bool(same_labels.all()),
        "examples": int(len(reference)),
    }


def main() -> None:
    parser = stage_parser(__doc__, framework=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for the exported models")
    parser.add_argument("--report", type=Path, required=True, help="export/parity report JSON (DVC metric)")
    args = parser.parse_args()
    params = load_project_params(args.params, args.project)["export"]
    trained = load_trained(args.model_dir)
    splits = load_npz(args.data / SPLITS_FILE)
    x_test = splits["x_test"]
    normaliser = {"mean": splits["input_mean"], "scale": splits["input_scale"]} if "input_mean" in splits else None
    exported_input = x_test * normaliser["scale"] + normaliser["mean"] if normaliser else x_test

    files = trained.backend.export(trained.model, args.out, exported_input, normaliser=normaliser)
    reference = trained.backend.predict_proba(trained.model, x_test)
    report = parity_report(reference, onnx_in_fresh_process(files["onnx"], exported_input), trained.meta["task"])
    report["files"] = {kind: path.name for kind, path in files.items()}
    report["raw_input"] = normaliser is not None  # the standardiser is inside the exported models
    write_json(args.report, report)
    if not report["identical_argmax"] or report["max_abs_diff"] > params["parity_atol"]:
        sys.exit(f"ONNX parity failed for {args.project}/{args.framework}: {report} (atol {params['parity_atol']})")
    print(f"{args.project}/{args.framework}: exported {', '.join(report['files'].values())}; "
          f"max |diff| {report['max_abs_diff']:.2e}, argmax identical")


if __name__ == "__main__":
    main()
