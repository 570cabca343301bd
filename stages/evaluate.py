"""Stage 5: score the trained model on the held-out test split; write metrics and plots.

The project's task decides what the metrics and plots are, and compares the model with the
baselines' test metrics (written by the baselines stage). A task whose test score depends on a
choice made on validation (``Task.scores_with_validation``) gets the validation predictions too.
"""
from __future__ import annotations

from pathlib import Path

from curriculum.io import atomic_path, read_json, write_json
from curriculum.layout import ProcessedData
from curriculum.trained import load_trained
from stages.cli import load_project, stage_parser


def write_plots(directory: Path, plots: dict) -> None:
    """Records as JSON (DVC's templates read them), images as the PNG bytes the task rendered."""
    for name, content in plots.items():
        if isinstance(content, bytes):
            with atomic_path(directory / name, suffix=Path(name).suffix) as tmp:
                tmp.write_bytes(content)
        else:
            write_json(directory / name, content)


def main() -> None:
    parser = stage_parser(__doc__, variant=True)
    parser.add_argument("--baselines", type=Path, required=True, help="the baselines' test metrics (JSON)")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON (DVC metric)")
    parser.add_argument("--plots", type=Path, required=True, help="directory for plot data and images (DVC plots)")
    args = parser.parse_args()
    project, config = load_project(args)
    data = ProcessedData.read(args.data)
    trained = load_trained(args.model_dir, data.fitted)
    task = project.task

    model_data = project.model_data(data, trained.meta["model"])

    def predict(split: str) -> dict:
        return data.in_output_units(trained.backend.predict(trained.model, task.inputs(model_data.split(split))))

    # A task that chooses something on validation (a score threshold) gets that split's predictions too.
    extra = {"val_predictions": predict("val")} if task.scores_with_validation else {}
    evaluation = task.evaluate(data, predict("test"), config.evaluate, read_json(args.baselines), **extra)
    write_json(args.metrics, evaluation.metrics)
    write_plots(args.plots, evaluation.plots)
    print(f"{args.project}/{args.variant}: " + ", ".join(
        f"{key} {value:.4f}" for key, value in evaluation.metrics.items() if isinstance(value, float)))


if __name__ == "__main__":
    main()
