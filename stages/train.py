"""Stage 4: train one framework's model for the project, logging curves with DVCLive."""
from __future__ import annotations

import time
from pathlib import Path

from dvclive import Live

from curriculum.frameworks import get_backend
from curriculum.io import load_npz
from curriculum.params import load_project_params
from curriculum.projects import get_project
from curriculum.trained import write_meta
from stages.cli import stage_parser
from stages.preprocess import SPLITS_FILE


def main() -> None:
    parser = stage_parser(__doc__, framework=True)
    parser.add_argument("--live-dir", type=Path, required=True, help="DVCLive directory for training curves")
    args = parser.parse_args()
    params = load_project_params(args.params, args.project)
    project = get_project(args.project)
    backend = get_backend(args.framework)
    train_params = params["train"]
    splits = load_npz(args.data / SPLITS_FILE)
    input_shape = tuple(splits["x_train"].shape[1:])
    n_outputs = 1 if project.task == "binary" else len(splits["class_names"])

    backend.seed_everything(params["seed"])
    model = project.model_builder(args.framework)(input_shape, n_outputs, train_params)
    args.model_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with Live(dir=str(args.live_dir), save_dvc_exp=False, dvcyaml=None) as live:
        backend.fit(model, splits, project.task, train_params, params["seed"], args.model_dir, live)
    write_meta(
        args.model_dir, project=args.project, framework=args.framework, task=project.task, input_shape=list(input_shape),
        n_outputs=n_outputs, train_params=train_params,
    )
    print(f"{args.project}/{args.framework}: trained in {time.perf_counter() - started:.1f} s -> {args.model_dir}")


if __name__ == "__main__":
    main()
