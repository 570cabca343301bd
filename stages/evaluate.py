"""Stage 5: score the trained model on the held-out test split; write metrics and plots."""
from __future__ import annotations

from pathlib import Path

from curriculum import metrics
from curriculum.io import load_npz, write_json
from curriculum.params import load_project_params
from curriculum.plots import misclassified_grid
from curriculum.trained import load_trained
from stages.cli import stage_parser
from stages.preprocess import SPLITS_FILE


def main() -> None:
    parser = stage_parser(__doc__, framework=True)
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON (DVC metric)")
    parser.add_argument("--plots", type=Path, required=True, help="directory for plot data and images (DVC plots)")
    args = parser.parse_args()
    params = load_project_params(args.params, args.project)["evaluate"]
    trained = load_trained(args.model_dir)
    task = trained.meta["task"]
    splits = load_npz(args.data / SPLITS_FILE)
    x_test, y_test = splits["x_test"], splits["y_test"]
    class_names = [str(name) for name in splits["class_names"]]

    proba = trained.backend.predict_proba(trained.model, x_test)
    y_pred = metrics.predicted_labels(proba, task)
    scores = metrics.classification_metrics(y_test, proba, task, class_names)
    write_json(args.metrics, scores)
    write_json(args.plots / "confusion.json", metrics.confusion_records(y_test, y_pred, class_names))
    if task == "binary":
        write_json(args.plots / "roc.json", metrics.roc_records(y_test, proba.reshape(-1)))
        write_json(args.plots / "precision_recall.json", metrics.precision_recall_records(y_test, proba.reshape(-1)))
    if x_test.ndim == 4 and params.get("misclassified_examples"):  # image projects only
        misclassified_grid(x_test, y_test, y_pred, class_names, args.plots / "misclassified.png", params["misclassified_examples"])
    print(f"{args.project}/{args.framework}: " + ", ".join(
        f"{key} {value:.4f}" for key, value in scores.items() if isinstance(value, float)))


if __name__ == "__main__":
    main()
