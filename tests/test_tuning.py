"""The search space and objective of a hyperparameter study (curriculum/tuning.py)."""
from __future__ import annotations

import json

import optuna
import pytest

from curriculum.config import ConfigError, TuneConfig, parse_section, read_params
from curriculum.projects import get_project
from curriculum.tuning import check_space, committed_values, dvc_overrides, kept_epoch_value, objective, suggest

SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "epochs": {"type": "int", "low": 2, "high": 8, "log": False},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
}


def tune_section(**changes):
    section = {"variant": "torch", "metric": None, "trials": 4, "workers": 1, "storage": None,
               "pruning": {"startup_trials": 2, "warmup_epochs": 1}, "space": SPACE}
    return {**section, **changes}


@pytest.fixture(scope="module")
def image_classification():
    project = get_project("image_classification")
    params = read_params("params.yaml")["image_classification"]
    return project, parse_section(project.config, params, "image_classification")


def test_a_space_parses_by_type_and_every_draw_is_a_valid_train_section(image_classification):
    project, config = image_classification
    tune = parse_section(TuneConfig, tune_section(), "image_classification.tune")
    check_space(tune, config, "image_classification.tune")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(5):
        values = suggest(study.ask(), tune.space)
        assert 1e-4 <= values["learning_rate"] <= 1e-2 and values["batch_size"] in (32, 64, 128)
        assert isinstance(values["epochs"], int) and 2 <= values["epochs"] <= 8
        overrides = dvc_overrides("image_classification", "torch", values)
        assert overrides[0] == f"++image_classification.variants.torch.train.batch_size={values['batch_size']}"
        # what DVC will write into params.yaml is exactly what was drawn
        assert json.loads(overrides[2].split("=", 1)[1]) == values["learning_rate"]


def test_a_seeded_sampler_draws_the_same_values_whatever_order_the_space_lists():
    forward = parse_section(TuneConfig, tune_section(), "tune")
    backward = parse_section(TuneConfig, tune_section(space=dict(reversed(SPACE.items()))), "tune")
    draws = [suggest(optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3)).ask(), tune.space)
             for tune in (forward, backward)]
    assert draws[0] == draws[1]


def test_without_a_metric_the_objective_is_what_the_training_loop_monitors(image_classification):
    project, config = image_classification
    tune = parse_section(TuneConfig, tune_section(), "tune")
    monitored_by = config.variant_train("torch").monitor
    name, direction = objective(tune, config, project.task, "tune")
    if monitored_by == "loss":
        assert (name, direction) == ("val_loss", "minimize")
    else:
        assert (name, direction) == (f"val_{project.task.epoch_metric}", "maximize")


def test_a_named_metric_sets_the_direction_and_one_the_task_does_not_log_is_refused(image_classification):
    project, config = image_classification
    accuracy = parse_section(TuneConfig, tune_section(metric="val_accuracy"), "tune")
    assert objective(accuracy, config, project.task, "ic.tune") == ("val_accuracy", "maximize")
    assert objective(accuracy.model_copy(update={"metric": "val_loss"}), config, project.task, "ic.tune") == \
        ("val_loss", "minimize")
    for unknown in ("val_f1", "accuracy", "test_accuracy"):  # never the test split, nor a training value
        with pytest.raises(ConfigError, match=f"ic.tune.metric: '{unknown}' is not a validation value the task "
                                              r"logs every epoch \(val_loss, val_accuracy\)"):
            objective(accuracy.model_copy(update={"metric": unknown}), config, project.task, "ic.tune")


@pytest.mark.parametrize("monitored_curve, objective_curve, mode, kept", [
    ([0.5, 0.3, 0.3, 0.4], [0.80, 0.90, 0.95, 0.97], "min", (1, 0.90)),  # a tie is no improvement
    ([0.80, 0.90, 0.85], [0.5, 0.3, 0.2], "max", (1, 0.3)),
    ([float("nan"), 0.6, float("nan")], [0.1, 0.2, 0.3], "min", (1, 0.2)),  # NaN never improves
])
def test_the_objective_is_taken_at_the_epoch_the_model_keeps(monitored_curve, objective_curve, mode, kept):
    assert kept_epoch_value(monitored_curve, objective_curve, mode) == kept


def test_a_curve_without_a_keepable_epoch_is_an_error():
    with pytest.raises(ValueError, match="no epoch has a monitored value"):
        kept_epoch_value([float("nan")] * 3, [0.1] * 3, "min")


def test_the_committed_values_are_the_first_trial_only_when_the_space_holds_them(image_classification):
    project, config = image_classification
    train = config.variant_train("torch")
    holding = {key: SPACE[key] for key in ("learning_rate", "batch_size")}
    tune = parse_section(TuneConfig, tune_section(space=holding), "tune")
    assert committed_values(tune, config) == {"batch_size": train.batch_size, "learning_rate": train.learning_rate}
    assert train.epochs > SPACE["epochs"]["high"]  # the space below leaves the committed epochs out
    assert committed_values(parse_section(TuneConfig, tune_section(), "tune"), config) is None
    choices = {**holding, "batch_size": {"type": "categorical", "choices": [train.batch_size * 2, train.batch_size * 4]}}
    assert committed_values(parse_section(TuneConfig, tune_section(space=choices), "tune"), config) is None
