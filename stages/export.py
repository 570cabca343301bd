"""Stage 6: export to ONNX and the framework's native format, then check parity.

The ONNX file is run with onnxruntime in a fresh process on the test split (its first
``export.parity_examples`` examples; null: all of them) and must
agree with the trained model by the task's parity rule (identical labels and probabilities
within ``parity_atol`` for classification; forecasts within ``parity_atol`` in original units
for regression). Otherwise the stage fails and the export is not accepted.

Fitted scalers are folded into the exported models: an ``input_scaler`` (``mean``/``scale``
fitted in preprocessing) makes them take raw inputs, an ``output_scaler`` makes them answer
in original units; the check then feeds raw test inputs (``x * scale + mean``) and compares
with the trained model's outputs mapped back the same way. A model that takes a frozen stem's
cached output (:class:`curriculum.projects.base.FrozenStem`) is exported with the stem in front:
the check feeds the split's raw inputs to the export and their cached stem output to the model.
The fitted artifacts a model needs to read a user's input (``Project.serving_artifacts``: a
tokenizer) are written beside it, with the project's serving card (``serving.json``: what a
request to this model looks like, see :mod:`curriculum.serving`).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from curriculum.io import load_npz, save_npz, write_json
from curriculum.layout import ProcessedData, write_fitted
from curriculum.serving import CARD_FILE
from curriculum.trained import load_trained
from stages.cli import load_project, stage_parser


def onnx_in_fresh_process(model_path: Path, x: np.ndarray, output_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        save_npz(inputs, x=x)
        subprocess.run([sys.executable, "-m", "curriculum.onnx_check", str(model_path), str(inputs), str(outputs),
                        *output_names], check=True)
        return load_npz(outputs)


def main() -> None:
    parser = stage_parser(__doc__, variant=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for the exported models")
    parser.add_argument("--report", type=Path, required=True, help="export/parity report JSON (DVC metric)")
    args = parser.parse_args()
    project, config = load_project(args)
    data = ProcessedData.read(args.data)
    trained = load_trained(args.model_dir, data.fitted)
    task = project.task
    model, framework = trained.meta["model"], trained.meta["framework"]
    input_scaler, output_scaler = data.fitted.get("input_scaler"), data.fitted.get("output_scaler")
    examples = slice(config.export.parity_examples)  # the first N test examples (null: all)
    x_test = task.inputs(project.model_data(data, model).split("test"))[examples]
    stem = project.stem(model, framework, data, config)
    # With a stem in front, the exported model takes the split's own raw inputs.
    raw_input = data.raw_inputs(task.inputs(data.split("test"))[examples] if stem is not None else x_test)

    files = trained.backend.export(trained.model, args.out, raw_input,
                                   input_scaler=input_scaler, output_scaler=output_scaler, stem=stem)
    for name in project.serving_artifacts.get(model, ()):  # what turns a user's input into the model's
        files[name] = write_fitted(args.out, name, data.fitted[name])
    card = project.serving_card(data, config, model)
    if card is not None:  # how the server reads a request for this model and answers it
        files["card"] = args.out / CARD_FILE
        write_json(files["card"], card)
    reference = data.in_output_units(trained.backend.predict(trained.model, x_test))
    exported = onnx_in_fresh_process(files["onnx"], raw_input, task.output_names)
    report = task.parity(reference, exported, config.export.parity_atol)
    report["files"] = {kind: path.name for kind, path in files.items()}
    report["raw_input"] = input_scaler is not None or stem is not None  # scaler / stem inside the exported models
    write_json(args.report, report)
    if not report["passed"]:
        sys.exit(f"ONNX parity failed for {args.project}/{args.variant}: {report} (atol {config.export.parity_atol})")
    print(f"{args.project}/{args.variant}: exported {', '.join(report['files'].values())}; parity {report}")


if __name__ == "__main__":
    main()
