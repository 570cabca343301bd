"""TPE against random search on one project's study, side by side in one run.

Both samplers get the same budget of trials and the same seeds, over the search space of the
project's ``tune`` section, scored as ``pipeline tune`` scores a trial: the study's validation value
at the epoch the model keeps. Each trial trains the variant in process, with its real back end on
the project's processed data (run ``dvc repro`` first), without DVC and without pruning, so only
the sampler differs. Printed: for each seed, how many trials each sampler needed to reach the
target and its best value after the whole budget; then the medians side by side.

    python bench/tune_samplers.py [--project simple_nn] [--trials 40] [--seeds 0 1 ... 9] [--target Q]

The default target is the value that 10% of all the trials of this run reached, whichever sampler
drew them (a target both samplers can meet, set by what the space holds rather than guessed).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from dvclive import Live

from curriculum import tuning
from curriculum.frameworks import get_backend
from curriculum.frameworks.epochs import monitored
from curriculum.layout import ProcessedData
from curriculum.projects import get_project

REPO_ROOT = Path(__file__).resolve().parents[1]
QUIET = 10**9  # train.log_every: no per-epoch lines from hundreds of trials
SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}


def trial_value(project, config, variant: str, data: ProcessedData, values: dict, metric: str,
                monitor: tuple[str, str]) -> float:
    """Train the variant with ``values`` in its train section; the metric at the kept epoch."""
    settings = config.variants[variant]
    train = tuning.trial_train(config, variant, {**values, "log_every": QUIET})
    backend = get_backend(settings.framework)
    model_data = project.model_data(data, settings.model)
    backend.set_threads(train.threads)
    backend.seed_everything(config.seed)
    model = project.build_model(settings.model, settings.framework, project.model_spec(model_data), train, data.fitted)
    with tempfile.TemporaryDirectory() as scratch:
        with Live(dir=f"{scratch}/live", save_dvc_exp=False, dvcyaml=None) as live:
            backend.fit(model, model_data, project.task, train, config.seed, Path(scratch) / "model", live)
        curves = {name: np.loadtxt(f"{scratch}/live/plots/metrics/eval/{name.removeprefix('val_')}.tsv",
                                   skiprows=1, delimiter="\t", usecols=1, ndmin=1)
                  for name in {metric, monitor[0]}}
    return tuning.kept_epoch_value(curves[monitor[0]], curves[metric], monitor[1])[1]


def trials_to_reach(values: list[float], target: float, direction: str) -> int | None:
    """The 1-based number of the first trial at or beyond ``target``; None if none reached it."""
    for number, value in enumerate(values, start=1):
        if (value <= target) if direction == "minimize" else (value >= target):
            return number
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="simple_nn")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--target", type=float, help="validation value to reach (default: the run's 10%% best)")
    args = parser.parse_args()

    project = get_project(args.project)
    config = project.load_config(REPO_ROOT / "params.yaml")
    if config.tune is None:
        raise SystemExit(f"{args.project}.tune: no study declared")
    tune = config.tune
    metric, direction = tuning.objective(tune, config, project.task, f"{args.project}.tune")
    monitor = monitored(config.variant_train(tune.variant), project.task)
    processed = REPO_ROOT / "data" / args.project / "processed"
    if not processed.is_dir():
        raise SystemExit(f"{processed}: missing; run `dvc repro preprocess@{args.project}` first")
    data = ProcessedData.read(processed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    curves: dict[tuple[str, int], list[float]] = {}
    started = time.perf_counter()
    for seed in args.seeds:  # the samplers alternate, seed by seed, on the same machine state
        for name, sampler in SAMPLERS.items():
            study = optuna.create_study(direction=direction, sampler=sampler(seed=seed))
            values = []
            for _ in range(args.trials):
                trial = study.ask()
                value = trial_value(project, config, tune.variant, data, tuning.suggest(trial, tune.space), metric,
                                    monitor)
                study.tell(trial, value)
                values.append(value)
            curves[name, seed] = values
            print(f"{name:>6} seed {seed}: best {metric} {min(values) if direction == 'minimize' else max(values):.3g} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)

    every = sorted(value for values in curves.values() for value in values)
    target = args.target if args.target is not None else \
        float(np.quantile(every, 0.1 if direction == "minimize" else 0.9))
    best = min if direction == "minimize" else max
    print(f"\n{args.project}/{tune.variant}: {metric} ({direction}), target {target:.3g}, "
          f"{args.trials} trials per study, space {', '.join(sorted(tune.space))}")
    print(f"{'seed':>4} | {'TPE: trials to target':>21} | {'random: trials to target':>24} | "
          f"{'TPE best':>8} | {'random best':>11}")
    reached = {name: [] for name in SAMPLERS}
    for seed in args.seeds:
        cells = []
        for name in SAMPLERS:
            needed = trials_to_reach(curves[name, seed], target, direction)
            reached[name].append(needed if needed is not None else args.trials + 1)
            cells.append(str(needed) if needed is not None else f"not in {args.trials}")
        print(f"{seed:>4} | {cells[0]:>21} | {cells[1]:>24} | {best(curves['tpe', seed]):>8.3g} | "
              f"{best(curves['random', seed]):>11.3g}")
    medians = {name: statistics.median(counts) for name, counts in reached.items()}
    print(f"median trials to target: TPE {medians['tpe']:g}, random {medians['random']:g} "
          f"(random / TPE = {medians['random'] / medians['tpe']:.2f}; a study that never reached it counts "
          f"{args.trials + 1})")


if __name__ == "__main__":
    main()
