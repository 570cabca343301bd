"""Stage 4: train one variant of the project, logging curves with DVCLive."""
from __future__ import annotations

import time
from pathlib import Path

from curriculum.frameworks import get_backend
from curriculum.layout import ProcessedData, write_model_meta
from curriculum.trained import model_meta
from stages.cli import load_project, stage_parser


def main() -> None:
    parser = stage_parser(__doc__, variant=True)
    parser.add_argument("--live-dir", type=Path, required=True, help="DVCLive directory for training curves")
    args = parser.parse_args()
    project, config = load_project(args)
    variant = config.variants[args.variant]
    from dvclive import Live

    backend = get_backend(variant.framework)
    data = ProcessedData.read(args.data)
    spec = project.task.model_spec(data)

    backend.set_threads(config.train.threads)
    backend.seed_everything(config.seed)
    model = project.model_builder(variant.model, variant.framework)(spec, config.train)
    args.model_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with Live(dir=str(args.live_dir), save_dvc_exp=False, dvcyaml=None) as live:
        backend.fit(model, data, project.task, config.train, config.seed, args.model_dir, live)
    seconds = time.perf_counter() - started
    write_model_meta(args.model_dir, model_meta(args.project, args.variant, variant.framework, variant.model, spec, config.train))
    print(f"{args.project}/{args.variant}: trained in {seconds:.1f} s -> {args.model_dir}")


if __name__ == "__main__":
    main()
