"""Stage: score the project's baselines on the test split, as every model will be scored.

Each model's evaluation then says how it compares with each of them. The task (or the project)
decides what the baselines are: the majority class and a linear model for classification,
naive and statistical forecasters for time series.
"""
from __future__ import annotations

import os

# One BLAS/OpenMP thread, set before NumPy, SciPy or scikit-learn load their BLAS: fitted
# baselines (logistic regression, ridge) then round the same way on any machine, whatever its
# core count or OPENBLAS_NUM_THREADS. (threadpoolctl's limits reach only the libraries already
# loaded, and SciPy loads its own OpenBLAS when a baseline first imports it.)
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import warnings  # noqa: E402
from pathlib import Path

from curriculum.io import write_json
from curriculum.layout import ProcessedData
from stages.cli import load_project, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="directory written by preprocess")
    parser.add_argument("--metrics", type=Path, required=True, help="the baselines' test metrics (JSON, a DVC metric)")
    args = parser.parse_args()
    project, config = load_project(args)
    data = ProcessedData.read(args.data)
    with warnings.catch_warnings(record=True) as caught:  # one line each in the log, not a page
        warnings.simplefilter("always")
        predictions = project.baselines(data, config)
    for message in dict.fromkeys(f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught):
        print(f"{args.project} baselines: {message.rstrip(':')}")
    scores = {name: project.task.score(data, prediction) for name, prediction in predictions.items()}
    write_json(args.metrics, scores)
    for name, metrics in scores.items():
        print(f"{args.project}/{name}: {project.task.headline} {metrics[project.task.headline]:.4f}")


if __name__ == "__main__":
    main()
