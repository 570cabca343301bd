"""``python -m pipeline tune <project>``: an Optuna study over a project's ``tune`` section, every
trial a DVC experiment, trials side by side as Prefect tasks.

Each trial asks the study (seeded TPE sampler, median pruner) for values, runs
``dvc exp run --temp -n <study>-<number> -S <project>.variants.<variant>.train.<key>=<value> ...
train@<project>-<variant>`` -- its own temporary copy of the repository, so trials do not wait on
the workspace's DVC lock, sharing the DVC cache, so the upstream stages are not redone -- and
tells the study the best monitored validation value its train stage reported (see
:func:`curriculum.tuning.trial_reports`). ``dvc exp show`` then lists every finished trial with its
params and metrics, and ``dvc exp apply <study>-<number>`` puts a trial's params into the
workspace for a plain ``dvc repro``.

The study lives in an Optuna storage (a SQLite file under ``tune/`` by default, a PostgreSQL URL
for studies with several writers), so a killed study resumes where it stopped: run the same
command again, and only the trials not yet finished are run.
"""
from __future__ import annotations

import math
import subprocess
import warnings
from datetime import datetime, timezone
from collections import deque
from pathlib import Path
from typing import Any

from curriculum import tuning
from curriculum.config import ConfigError, TuneConfig
from curriculum.projects import get_project
from pipeline import dvc_bridge

TUNE_DIR = "tune"  # SQLite studies; git-ignored
EXPERIMENT_PREFIX = "experiment_prefix"  # the study's user attribute naming its trials' experiments
TAIL_LINES = 20


def default_storage(repo_root: Path, project: str) -> str:
    return f"sqlite:///{(repo_root / TUNE_DIR / f'{project}.db').resolve()}"


def study_name(project: str, variant: str) -> str:
    return f"{project}-{variant}".replace("_", "-")


def load_tune(repo_root: Path, project_name: str, variant: str | None) -> tuple[Any, Any, TuneConfig]:
    """The project, its checked params and its checked study section (the variant as asked)."""
    project = get_project(project_name)
    config = project.load_config(repo_root / "params.yaml")
    if config.tune is None:
        raise ConfigError(f"{project_name}.tune: no study declared (null); give it a variant, trials and a space")
    tune = config.tune.model_copy(update={"variant": variant}) if variant else config.tune
    tuning.check_space(tune, config, f"{project_name}.tune")
    return project, config, tune


def run_trial(repo_root: Path, project: str, variant: str, name: str, overrides: list[str],
              environment: dict[str, str]) -> str:
    """One trial as a DVC experiment; returns ``"complete"`` or ``"pruned"``, raises on failure."""
    set_params = [argument for override in overrides for argument in ("--set-param", override)]
    stage = f"train@{project}-{variant}"
    command, env = dvc_bridge.venv_dvc("exp", "run", "--temp", "--name", name, *set_params, stage)
    result = subprocess.run(command, cwd=repo_root, env={**env, **environment},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode == 0:
        return "complete"
    tail = deque(result.stdout.splitlines(), maxlen=TAIL_LINES)
    if dvc_bridge.command_exit_code(tail, stage) == tuning.PRUNED_EXIT:
        return "pruned"
    raise dvc_bridge.StageFailed(stage, result.returncode, dvc_bridge.command_exit_code(tail, stage), tuple(tail))


def best_reported(intermediate: dict[int, float], direction: str) -> float:
    """The trial's objective: its best epoch's monitored value, the epoch its model keeps."""
    if not intermediate:
        raise RuntimeError("the train stage reported no epoch (did DVC restore it from its run cache?)")
    values = [value for value in intermediate.values() if not math.isnan(value)]
    return max(values) if direction == "maximize" else min(values)


def _study(storage: str, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=storage)


def create_study(config: Any, tune: TuneConfig, direction: str, storage: str, name: str):
    """The study (made once, loaded when it exists: a killed study resumes), its sampler seeded
    from the project's seed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name, storage=storage, direction=direction, load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=config.seed), pruner=tuning.median_pruner(tune),
    )
    if EXPERIMENT_PREFIX not in study.user_attrs:  # a new study: its experiments get names no other study had
        study.set_user_attr(EXPERIMENT_PREFIX, f"{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}")
    return study


def experiment_name(study: Any, number: int) -> str:
    """The DVC experiment of trial ``number``: unique across studies, also a deleted and remade one,
    since ``dvc exp apply`` takes a name only when one experiment has it."""
    return f"{study.user_attrs[EXPERIMENT_PREFIX]}-t{number:03d}"


def _trial_record(trial: Any) -> dict[str, Any]:
    return {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params}


def trial(repo_root: str, project: str, variant: str, storage: str, name: str, space: dict, direction: str) -> dict:
    """Ask, run the experiment, tell: one trial, start to end."""
    import optuna

    study = _study(storage, name)
    asked = study.ask()
    values = tuning.suggest(asked, space)
    experiment = experiment_name(study, asked.number)
    print(f"trial {asked.number} ({experiment}): {values}", flush=True)
    # The Trial object of the train stage's process is rebuilt from this id (Optuna's storage key).
    environment = tuning.trial_environment(storage, name, asked._trial_id)
    try:
        outcome = run_trial(Path(repo_root), project, variant, experiment,
                            tuning.dvc_overrides(project, variant, values), environment)
        if outcome == "pruned":
            frozen = study.tell(asked, state=optuna.trial.TrialState.PRUNED)
        else:
            reported = next(t for t in study.get_trials(deepcopy=False) if t.number == asked.number)
            frozen = study.tell(asked, best_reported(reported.intermediate_values, direction))
    except BaseException:
        study.tell(asked, state=optuna.trial.TrialState.FAIL)
        raise
    print(f"trial {asked.number}: {frozen.state.name.lower()}"
          + (f", {frozen.value:.4f}" if frozen.value is not None else ""), flush=True)
    return _trial_record(frozen)


def remaining_trials(study: Any, trials: int) -> int:
    """Trials still to run for ``trials`` in all: finished ones (complete or pruned) count; ones a
    killed study left running are marked failed (their experiments never finished) and rerun."""
    import optuna

    states = optuna.trial.TrialState
    for stale in study.get_trials(deepcopy=False, states=(states.RUNNING, states.WAITING)):
        study.tell(stale.number, state=states.FAIL)
    finished = study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED))
    return max(trials - len(finished), 0)


def run_study(repo_root: Path, project_name: str, variant: str | None = None, trials: int | None = None,
              workers: int | None = None, storage: str | None = None) -> Any:
    """Run the study's remaining trials as a Prefect flow, ``workers`` at once; returns the study."""
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    project, config, tune = load_tune(repo_root, project_name, variant)
    trials, workers = trials or tune.trials, workers or tune.workers
    storage = storage or tune.storage or default_storage(repo_root, project_name)
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    _, direction = tuning.objective(tune, config, project.task)
    name = study_name(project_name, tune.variant)
    try:
        study = create_study(config, tune, direction, storage, name)
    except Exception as error:  # SQLAlchemy's errors for a bad URL, an unreachable server, a wrong password
        raise ConfigError(f"{project_name}.tune.storage: cannot open {storage}: {type(error).__name__}: "
                          f"{str(error).splitlines()[0]}") from None
    todo = remaining_trials(study, trials)
    print(f"study {name} in {storage}: {trials - todo} of {trials} trials done, {todo} to run, {workers} at a time",
          flush=True)
    trial_task = task(name="trial", log_prints=True)(trial)

    @flow(name=f"tune-{name}", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=workers))
    def tune_flow() -> list[Any]:
        futures = [trial_task.submit(str(repo_root), project_name, tune.variant, storage, name, tune.space, direction)
                   for _ in range(todo)]
        results = [future.result(raise_on_failure=False) for future in futures]
        plots = write_study_plots(study, repo_root / TUNE_DIR / name)
        publish_study(study, plots)
        return results

    tune_flow()
    return study


def best_summary(study: Any) -> str:
    """The best trial's experiment, value and params, and how to take them."""
    import optuna

    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return "no trial completed: see the failed trials' output above"
    best = study.best_trial
    experiment = experiment_name(study, best.number)
    params = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                       for key, value in sorted(best.params.items()))
    return (f"best: trial {best.number} ({experiment}), {best.value:.4f}: {params}\n"
            f"take it: dvc exp apply {experiment} && dvc repro")


def write_study_plots(study: Any, directory: Path) -> list[Path]:
    """Optuna's own views of the study as PNGs: the optimisation history, the parameters'
    importances (once two trials completed) and the parallel coordinates of every trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as views

    directory.mkdir(parents=True, exist_ok=True)
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    plots = {"optimization_history.png": views.plot_optimization_history,
             "parallel_coordinate.png": views.plot_parallel_coordinate}
    if len(completed) >= 2:
        plots["param_importances.png"] = views.plot_param_importances
    written = []
    for file_name, plot in plots.items():
        with warnings.catch_warnings():  # Optuna marks its matplotlib views experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = plot(study)
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.savefig(directory / file_name, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(directory / file_name)
    return written


def publish_study(study: Any, plots: list[Path]) -> None:
    """The trials as a Prefect table artifact and the best trial as a markdown one."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = study.study_name.lower()
    rows = [{"trial": t.number, "experiment": experiment_name(study, t.number), "state": t.state.name.lower(),
             "value": t.value, **t.params} for t in study.get_trials(deepcopy=False)]
    create_table_artifact(rows, key=f"{key}-trials", description=f"every trial of study {study.study_name}")
    create_markdown_artifact("\n\n".join([best_summary(study).replace("\n", "  \n"),
                                          "Plots: " + ", ".join(f"`{path}`" for path in plots)]),
                             key=f"{key}-best", description=f"the best trial of study {study.study_name}")
