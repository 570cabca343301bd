"""The search space and objective of a hyperparameter study (curriculum/tuning.py)."""
from __future__ import annotations

import json

import optuna
import pytest

from curriculum.config import ConfigError, TuneConfig, parse_section, read_params
from curriculum.projects import get_project
from curriculum.tuning import check_space, dvc_overrides, objective, suggest

SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "epochs": {"type": "int", "low": 2, "high": 8, "log": False},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
}


def tune_section(**changes):
    section = {"variant": "torch", "trials": 4, "workers": 1, "storage": None,
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


def test_the_objective_is_what_the_training_loop_monitors_on_validation(image_classification):
    project, config = image_classification
    tune = parse_section(TuneConfig, tune_section(), "tune")
    monitored_by = config.variant_train("torch").monitor
    name, direction = objective(tune, config, project.task)
    if monitored_by == "loss":
        assert (name, direction) == ("val_loss", "minimize")
    else:
        assert (name, direction) == (f"val_{project.task.epoch_metric}", "maximize")


@pytest.mark.parametrize("space, message", [
    ({}, "at least 1 item"),
    ({"learning_rate": {"type": "float", "low": 0.1, "high": 0.01, "log": False}}, "must be below high"),
    ({"learning_rate": {"type": "float", "low": 0.0, "high": 0.01, "log": True}}, "log scale needs low > 0"),
    ({"batch_size": {"type": "categorical", "choices": [64]}}, "at least 2 items"),
    ({"batch_size": {"type": "grid", "values": [64, 128]}}, "type"),
])
def test_a_malformed_space_is_refused_naming_the_key(space, message):
    with pytest.raises(ConfigError, match=message):
        parse_section(TuneConfig, tune_section(space=space), "image_classification.tune")


@pytest.mark.parametrize("changes, message", [
    ({"variant": "jax"}, "tune.variant: 'jax' is not one of the project's variants"),
    ({"space": {"learnin_rate": SPACE["learning_rate"]}}, "tune.space.learnin_rate: not a train key"),
    ({"space": {"epochs": {"type": "int", "low": 0, "high": 4, "log": False}}}, "tune.space.epochs: 0 is not a valid"),
    ({"space": {"epochs": {"type": "float", "low": 1.0, "high": 4.0, "log": False}}}, "tune.space.epochs: 1.0"),
])
def test_a_space_the_variant_cannot_take_is_refused_before_any_trial(image_classification, changes, message):
    project, config = image_classification
    tune = parse_section(TuneConfig, tune_section(**changes), "image_classification.tune")
    with pytest.raises(ConfigError, match=message):
        check_space(tune, config, "image_classification.tune")


def test_the_committed_study_of_image_classification_is_valid(image_classification):
    project, config = image_classification
    assert config.tune is not None
    check_space(config.tune, config, "image_classification.tune")
