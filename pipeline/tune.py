"""``python -m pipeline tune <project>``: an Optuna study over a project's ``tune`` section, every
trial a DVC experiment, trials side by side as Prefect tasks.

The upstream stages the train stage reads are reproduced once in the workspace. Then each trial
asks the study (one seeded TPE sampler shared by the flow's threads, a median pruner) for values
and runs ``dvc exp run --temp --name <study>-<stamp>-tNNN --set-param ++<project>.variants.
<variant>.train.<key>=<value> ... train@<project>-<variant>`` -- its own temporary copy of the
repository, so trials do not wait on the workspace's DVC lock, sharing the DVC cache, so the
upstream stages are not redone. While it trains, the train stage reports every epoch to the
study, whose pruner may stop it (:func:`curriculum.tuning.trial_reports`). A finished trial is
scored by the study's validation value at the epoch its model keeps, read from the experiment's
own training curves (so a trial DVC restored from its run cache is scored too). The study's first
trial runs the committed values. ``dvc exp show`` lists every finished trial with its params and
metrics, and ``dvc exp apply <experiment>`` puts one into the workspace for a plain ``dvc repro``.

The study lives in an Optuna storage (a SQLite file under ``tune/`` by default, a PostgreSQL URL
for several writers or machines) with Optuna's heartbeat on running trials, so a killed study
resumes where it stopped: run the same command again, its dead trials are failed and only the
missing ones run; a second machine pointed at the same storage joins the study.
"""
from __future__ import annotations

import csv
import io
import logging
import subprocess
import time
import warnings
from datetime import datetime, timezone
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curriculum import tuning
from curriculum.config import ConfigError, TuneConfig
from curriculum.frameworks.epochs import monitored
from curriculum.projects import get_project
from pipeline import dvc_bridge

TUNE_DIR = "tune"  # SQLite studies; git-ignored
EXPERIMENT_PREFIX = "experiment_prefix"  # the study's user attribute naming its trials' experiments
TAIL_LINES = 20
HEARTBEAT_SECONDS = 3  # a running trial's orchestrator writes to the storage this often
GRACE_SECONDS = 10  # a trial silent this long is failed (its orchestrator was killed)


def default_storage(repo_root: Path, project: str) -> str:
    return f"sqlite:///{(repo_root / TUNE_DIR / f'{project}.db').resolve()}"


def study_name(project: str, variant: str) -> str:
    return f"{project}-{variant}".replace("_", "-")


def load_tune(repo_root: Path, project_name: str, variant: str | None) -> tuple[Any, Any, TuneConfig, str, str]:
    """The project, its checked params, its checked study section (the variant as asked), and the
    study's validation value and direction."""
    project = get_project(project_name)
    config = project.load_config(repo_root / "params.yaml")
    where = f"{project_name}.tune"
    if config.tune is None:
        raise ConfigError(f"{where}: no study declared (null); give it a variant, trials and a space")
    tune = config.tune.model_copy(update={"variant": variant}) if variant else config.tune
    tuning.check_space(tune, config, where)
    metric, direction = tuning.objective(tune, config, project.task, where)
    return project, config, tune, metric, direction


def train_stage(project: str, variant: str) -> str:
    return f"train@{project}-{variant}"


def curves_dir(repo_root: Path, stage_name: str) -> str:
    """The train stage's DVCLive plots directory, as ``dvc.yaml`` declares it (its one plots output)."""
    from dvc.repo import Repo

    with Repo(str(repo_root)) as repo:
        stage = repo.stage.collect(stage_name)[0]
        return next(str(out.def_path) for out in stage.outs if out.plot)


def read_curve(repo_root: Path, experiment: str, plots_dir: str, value_name: str) -> list[float]:
    """One validation curve of an experiment (``val_loss`` → DVCLive's ``metrics/eval/loss.tsv``),
    read from the experiment's commit, by epoch."""
    import dvc.api

    path = f"{plots_dir}/metrics/eval/{value_name.removeprefix('val_')}.tsv"
    rows = list(csv.DictReader(io.StringIO(dvc.api.read(path, repo=str(repo_root), rev=experiment)), delimiter="\t"))
    return [float(row[value_name.removeprefix("val_")]) for row in sorted(rows, key=lambda row: int(row["step"]))]


def experiment_objective(repo_root: Path, experiment: str, plots_dir: str, metric: str, monitor: tuple[str, str]) -> float:
    """The study's value at the epoch the experiment's model keeps."""
    monitor_name, mode = monitor
    _, value = tuning.kept_epoch_value(read_curve(repo_root, experiment, plots_dir, monitor_name),
                                          read_curve(repo_root, experiment, plots_dir, metric), mode)
    return value


def run_trial(repo_root: Path, project: str, variant: str, name: str, overrides: list[str],
              environment: dict[str, str]) -> str:
    """One trial as a DVC experiment; returns ``"complete"`` or ``"pruned"``, raises on failure."""
    set_params = [argument for override in overrides for argument in ("--set-param", override)]
    stage = train_stage(project, variant)
    command, env = dvc_bridge.venv_dvc("exp", "run", "--temp", "--name", name, *set_params, stage)
    result = subprocess.run(command, cwd=repo_root, env={**env, **environment},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode == 0:
        return "complete"
    tail = deque(result.stdout.splitlines(), maxlen=TAIL_LINES)
    if dvc_bridge.command_exit_code(tail, stage) == tuning.PRUNED_EXIT:
        return "pruned"
    raise dvc_bridge.StageFailed(stage, result.returncode, dvc_bridge.command_exit_code(tail, stage), tuple(tail))


def reproduce_upstream(repo_root: Path, project: str, stage: str) -> None:
    """``dvc repro`` what the train stage reads (download → preprocess), once in the workspace, so
    every trial's experiment finds it in the cache instead of each trial making it again."""
    upstream = next(node.upstream for node in dvc_bridge.project_stages(repo_root, project) if node.name == stage)
    if not upstream:
        return
    command, env = dvc_bridge.venv_dvc("repro", *upstream)
    result = subprocess.run(command, cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise dvc_bridge.StageFailed(" ".join(upstream), result.returncode, None,
                                     tuple(deque(result.stdout.splitlines(), maxlen=TAIL_LINES)))


def open_storage(url: str):
    """The study's storage, with Optuna's heartbeat: every running trial's orchestrator records one
    every HEARTBEAT_SECONDS, and a trial silent for GRACE_SECONDS (its machine or process was
    killed) is failed by whichever orchestrator looks next, this one or another machine's."""
    import optuna

    with warnings.catch_warnings():  # the heartbeat arguments are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS)


def fail_stale_trials(study: Any) -> None:
    import optuna

    with warnings.catch_warnings():  # Optuna marks it experimental; its own optimize() calls it too
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def create_study(config: Any, tune: TuneConfig, direction: str, storage: Any, name: str):
    """The study (made once, loaded when it exists: a killed study resumes) with a TPE sampler
    seeded from the project's seed plus the number of trials the storage already holds: a new
    study with one worker draws the same values every time, and a resumed study, or a second
    machine joining, draws new ones rather than the first run's again. A new study's first trial
    is the committed values."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True,
                                pruner=tuning.median_pruner(tune))
    with warnings.catch_warnings():  # constant_liar: running trials count as bad, so workers spread out
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.TPESampler(seed=config.seed + len(study.trials), constant_liar=True)
    if EXPERIMENT_PREFIX not in study.user_attrs:  # a new study: its experiments get names no other study had
        study.set_user_attr(EXPERIMENT_PREFIX, f"{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}")
        committed = tuning.committed_values(tune, config)
        if committed is not None:
            study.enqueue_trial(committed, user_attrs={"committed": True})
    return study


def experiment_name(study: Any, number: int) -> str:
    """The DVC experiment of trial ``number``: unique across studies, also a deleted and remade one,
    since ``dvc exp apply`` takes a name only when one experiment has it."""
    return f"{study.user_attrs[EXPERIMENT_PREFIX]}-t{number:03d}"


def _trial_record(trial: Any) -> dict[str, Any]:
    return {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params}


@dataclass(frozen=True)
class StudyRun:
    """What every trial of one run of a study needs to know."""

    repo_root: str
    project: str
    variant: str
    storage: str
    study: str
    trials: int  # the study's total, finished and running trials of every machine counted
    space: dict[str, Any]
    metric: str  # the study's validation value
    monitor: tuple[str, str]  # the value that picks the kept epoch, and its mode
    plots_dir: str  # the train stage's DVCLive plots directory


def trial(study: Any, storage: Any, run: StudyRun) -> dict | None:
    """Ask, run the experiment, tell: one trial, start to end, its heartbeat recorded throughout.
    ``study`` is shared by the flow's threads: one seeded sampler draws for all of them."""
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread  # what Study.optimize uses (optuna pinned)

    fail_stale_trials(study)
    if counted_trials(study) >= run.trials:  # other machines' trials filled the study meanwhile
        print(f"the study has its {run.trials} trials: nothing more to run", flush=True)
        return None
    with warnings.catch_warnings():  # Optuna expects heartbeats from optimize(); trial() beats them itself
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        asked = study.ask()
    values = tuning.suggest(asked, run.space)
    experiment = experiment_name(study, asked.number)
    committed = " (the committed values)" if asked.user_attrs.get("committed") else ""
    print(f"trial {asked.number} ({experiment}){committed}: {values}", flush=True)
    # The Trial object of the train stage's process is rebuilt from this id (Optuna's storage key).
    environment = tuning.trial_environment(run.storage, run.study, asked._trial_id)
    try:
        with get_heartbeat_thread(asked._trial_id, storage):
            outcome = run_trial(Path(run.repo_root), run.project, run.variant, experiment,
                                tuning.dvc_overrides(run.project, run.variant, values), environment)
        if outcome == "pruned":
            frozen = study.tell(asked, state=optuna.trial.TrialState.PRUNED)
        else:
            frozen = study.tell(asked, experiment_objective(Path(run.repo_root), experiment, run.plots_dir,
                                                            run.metric, run.monitor))
    except BaseException:
        study.tell(asked, state=optuna.trial.TrialState.FAIL)
        raise
    print(f"trial {asked.number}: {frozen.state.name.lower()}"
          + (f", {run.metric} {frozen.value:.4f}" if frozen.value is not None else ""), flush=True)
    return _trial_record(frozen)


def settle_running_trials(study: Any) -> None:
    """Fail the trials a killed run left running. A trial another machine is running and one whose
    process died a moment ago look alike until the grace period is over, so when any trial is
    running this waits that long once: the live ones have beaten by then, the dead ones are stale."""
    import optuna

    fail_stale_trials(study)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if running:
        print(f"trials {', '.join(str(t.number) for t in running)} running: waiting {GRACE_SECONDS + 1} s "
              "to tell a killed run's from another machine's", flush=True)
        time.sleep(GRACE_SECONDS + 1)
        fail_stale_trials(study)


def counted_trials(study: Any) -> int:
    """Trials that count towards the study's total: finished (complete or pruned) and running ones."""
    import optuna

    states = optuna.trial.TrialState
    return len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING)))


def run_study(repo_root: Path, project_name: str, variant: str | None = None, trials: int | None = None,
              workers: int | None = None, storage: str | None = None) -> Any:
    """Run the study's remaining trials as a Prefect flow, ``workers`` at once; returns the study."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    project, config, tune, metric, direction = load_tune(repo_root, project_name, variant)
    trials, workers = trials or tune.trials, workers or tune.workers
    storage = storage or tune.storage or default_storage(repo_root, project_name)
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    name = study_name(project_name, tune.variant)
    try:
        backend = open_storage(storage)
        study = create_study(config, tune, direction, backend, name)
    except Exception as error:  # SQLAlchemy's errors for a bad URL, an unreachable server, a wrong password
        raise ConfigError(f"{project_name}.tune.storage: cannot open {storage}: {type(error).__name__}: "
                          f"{str(error).splitlines()[0]}") from None
    reproduce_upstream(repo_root, project_name, train_stage(project_name, tune.variant))
    settle_running_trials(study)
    todo = max(trials - counted_trials(study), 0)
    print(f"study {name} in {storage}: {trials - todo} of {trials} trials done or running, {todo} to run, "
          f"{workers} at a time; {direction} {metric}", flush=True)
    run = StudyRun(str(repo_root), project_name, tune.variant, storage, name, trials, dict(tune.space), metric,
                   monitored(config.variant_train(tune.variant), project.task),
                   curves_dir(repo_root, train_stage(project_name, tune.variant)))

    @task(name="trial", log_prints=True, cache_policy=NO_CACHE)
    def trial_task(slot: int) -> dict | None:
        return trial(study, backend, run)

    @flow(name=f"tune-{name}", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=workers))
    def tune_flow() -> list[Any]:
        futures = [trial_task.submit(slot) for slot in range(todo)]
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
    # Optuna's views ask for TeX-like font families Debian's matplotlib lacks; the fallback is fine.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
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
        with warnings.catch_warnings():  # Optuna marks its matplotlib views experimental, and warns
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # when a study's values
            warnings.simplefilter("ignore", UserWarning)  # are all equal; the plot is written either way
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
