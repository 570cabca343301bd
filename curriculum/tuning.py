"""What a hyperparameter study searches and optimises, as pure functions over a project's params.

A project's ``tune`` section (``params.yaml``) names the variant to tune and its search space: a
range or a list of choices per key of the variant's ``train`` section. A trial's values become
that variant's train overrides (``<project>.variants.<variant>.train.<key>``), so a trial is an
ordinary params change: DVC reruns only what depends on it, and ``dvc exp apply`` of the best
trial leaves a workspace that a plain ``dvc repro`` reproduces.

The objective is a validation value the training loop logs every epoch (``tune.metric``:
``val_loss`` or ``val_<the task's epoch metric>``; null: the one the loop monitors), taken at the
epoch the trial's model keeps (:func:`kept_epoch_value`), so a trial is scored by the model it
would ship. The test split is never read.

Space entries, by ``type``::

    learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    units: {type: int, low: 16, high: 128, log: true}
    batch_size: {type: categorical, choices: [32, 64, 128]}
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from curriculum.config import Choices, ConfigError, FloatRange, IntRange, ProjectConfig, SpaceEntry, TuneConfig
from curriculum.frameworks.epochs import monitored, validation_values

if TYPE_CHECKING:
    import optuna

__all__ = ["check_space", "trial_train", "objective", "kept_epoch_value", "committed_values", "suggest", "dvc_overrides", "median_pruner", "trial_environment", "trial_reports",
           "TrialPruned", "PRUNED_EXIT"]

# How ``pipeline tune`` tells a trial's train stage which Optuna trial it is (the stage runs in a
# ``dvc exp run --temp`` copy of the repository, which passes the environment through).
TRIAL_ENV = {"storage": "DLC_TUNE_STORAGE", "study": "DLC_TUNE_STUDY", "trial": "DLC_TUNE_TRIAL_ID"}
PRUNED_EXIT = 77  # the train stage's exit status when the pruner stopped it: not a failure of the trial


class TrialPruned(Exception):
    """The study's pruner stopped this trial at an epoch: its curve was worse than the median."""


def check_space(tune: TuneConfig, config: ProjectConfig, where: str) -> None:
    """Refuse a space the variant's train section cannot take: an unknown variant or key, or a
    range end that the section itself rejects (``epochs: 0``), each named under ``where``."""
    if tune.variant not in config.variants:
        raise ConfigError(f"{where}.variant: {tune.variant!r} is not one of the project's variants "
                          f"({', '.join(config.variants)})")
    keys = type(config.train).model_fields
    problems = [f"{where}.space.{key}: not a train key; train has {', '.join(keys)}"
                for key in tune.space if key not in keys]
    if problems:
        raise ConfigError("\n".join(problems))
    for key, entry in tune.space.items():
        values = entry.choices if isinstance(entry, Choices) else (entry.low, entry.high)
        for value in values:
            try:
                trial_train(config, tune.variant, {key: value})
            except ConfigError as error:
                raise ConfigError(f"{where}.space.{key}: {value!r} is not a valid value: {error}") from None


def trial_train(config: ProjectConfig, variant: str, values: Mapping[str, Any]) -> Any:
    """The train section a trial of ``variant`` trains with: ``values`` among the variant's overrides,
    checked like the section itself."""
    base = config.variants[variant]
    trial_variant = base.model_copy(update={"train": {**base.train, **values}})
    return config.model_copy(update={"variants": {**config.variants, variant: trial_variant}}).variant_train(variant)


def objective(tune: TuneConfig, config: ProjectConfig, task: Any, where: str) -> tuple[str, str]:
    """The validation value a trial is scored by, as the training loop logs it (``val_loss``,
    ``val_accuracy``...), and Optuna's direction for it; a name the task does not log is refused."""
    logged = validation_values(task)
    name = tune.metric or monitored(config.variant_train(tune.variant), task)[0]
    if name not in logged:
        raise ConfigError(f"{where}.metric: {name!r} is not a validation value the task logs every epoch "
                          f"({', '.join(logged)})")
    return name, "maximize" if logged[name] == "max" else "minimize"


def kept_epoch_value(monitored_curve: Sequence[float], objective_curve: Sequence[float], mode: str) -> tuple[int, float]:
    """The epoch a run keeps and the objective's value there. The kept epoch is the last strict
    improvement of the monitored value (``mode``: ``"min"``/``"max"``; a NaN never improves), the
    rule both back ends' checkpointing follows."""
    sign = -1.0 if mode == "max" else 1.0
    best, kept = math.inf, None
    for epoch, value in enumerate(monitored_curve):
        if sign * value < best:
            best, kept = sign * value, epoch
    if kept is None:
        raise ValueError("no epoch has a monitored value to keep (every value NaN, or no epoch)")
    return kept, objective_curve[kept]


def committed_values(tune: TuneConfig, config: ProjectConfig) -> dict[str, Any] | None:
    """The variant's train values for the space's keys, when every one lies inside the space: a
    study's first trial, so its table says whether any trial beat what is committed."""
    train = config.variant_train(tune.variant)
    values = {key: getattr(train, key) for key in sorted(tune.space)}
    for key, entry in tune.space.items():
        value = values[key]
        inside = value in entry.choices if isinstance(entry, Choices) else entry.low <= value <= entry.high
        if not inside:
            return None
    return values


def suggest(trial: optuna.Trial, space: Mapping[str, SpaceEntry]) -> dict[str, Any]:
    """One value per space key, drawn by the study's sampler (keys in sorted order, so a seeded
    sampler draws the same values whatever order params.yaml lists them in)."""
    values: dict[str, Any] = {}
    for key in sorted(space):
        entry = space[key]
        if isinstance(entry, FloatRange):
            values[key] = trial.suggest_float(key, entry.low, entry.high, log=entry.log)
        elif isinstance(entry, IntRange):
            values[key] = trial.suggest_int(key, entry.low, entry.high, log=entry.log)
        else:
            values[key] = trial.suggest_categorical(key, entry.choices)
    return values


def dvc_overrides(project: str, variant: str, values: Mapping[str, Any]) -> list[str]:
    """``dvc exp run --set-param`` arguments that make ``values`` the variant's train overrides."""
    # ``++``: set the key whether or not the variant already overrides it (Hydra's override
    # grammar, which DVC uses). JSON scalars are YAML, and a float's JSON is its exact repr.
    return [f"++{project}.variants.{variant}.train.{key}={json.dumps(value)}" for key, value in sorted(values.items())]


def trial_environment(storage: str, study: str, trial_id: int) -> dict[str, str]:
    """The environment variables that make a train stage report to trial ``trial_id``."""
    return {TRIAL_ENV["storage"]: storage, TRIAL_ENV["study"]: study, TRIAL_ENV["trial"]: str(trial_id)}


def median_pruner(tune: TuneConfig) -> optuna.pruners.MedianPruner:
    """The study's pruner, built from params wherever it is needed: Optuna keeps no pruner in its
    storage, so the train stage's process, which asks it, builds the same one."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=tune.pruning.startup_trials,
                                       n_warmup_steps=tune.pruning.warmup_epochs)


@contextlib.contextmanager
def trial_reports(live: Any, config: ProjectConfig, train: Any, task: Any) -> Iterator[None]:
    """When this run is a study's trial (:func:`trial_environment` is set), report the study's
    validation value to Optuna after every epoch the back end logs to DVCLive, and raise
    :class:`TrialPruned` when the pruner says stop. Otherwise nothing.

    Both back ends end an epoch with ``live.next_step()`` after logging ``eval/<name>`` (Keras
    through DVCLive's callback), so wrapping that one call serves every framework."""
    if not os.environ.get(TRIAL_ENV["storage"]):
        yield
        return
    import optuna

    tune = config.tune
    if tune is None:
        raise ConfigError(f"this run is a trial of study {os.environ[TRIAL_ENV['study']]}, "
                          "but the project's params declare no tune section")
    study = optuna.load_study(study_name=os.environ[TRIAL_ENV["study"]], storage=os.environ[TRIAL_ENV["storage"]],
                              pruner=median_pruner(tune))
    trial = optuna.trial.Trial(study, int(os.environ[TRIAL_ENV["trial"]]))
    name = tune.metric or monitored(train, task)[0]
    next_step = live.next_step

    def next_step_reporting() -> None:
        epoch, value = live.step, float(live.summary["eval"][name.removeprefix("val_")])
        next_step()
        trial.report(value, epoch)
        if trial.should_prune():
            raise TrialPruned(f"pruned after epoch {epoch}: {name} {value:.4f}")

    live.next_step = next_step_reporting
    try:
        yield
    finally:
        live.next_step = next_step
