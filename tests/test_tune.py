"""`python -m pipeline tune`: a tiny Optuna study on the smoke copy, every trial a real DVC
experiment run through Prefect, resumed after a crash, and its bad inputs."""
from __future__ import annotations

import json

import optuna
import pytest
import yaml

from curriculum.config import ConfigError
from pipeline.tune import experiment_name, run_study
from tests.smoke import commit, dvc

IC = "image_classification"
SPACE = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
         "batch_size": {"type": "categorical", "choices": [16, 32]}}


def set_tune(repo, tune) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[IC]["tune"] = tune
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    commit(repo, "tune section")


def experiments(repo) -> dict[str, dict]:
    """``dvc exp show``'s experiments by name: the variant's train overrides and the train metrics."""
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                params = rev["data"]["params"]["params.yaml"]["data"][IC]["variants"]["torch"]
                found[rev["name"]] = {"train": params.get("train", {}), "metrics": rev["data"]["metrics"]}
    return found


def test_a_tiny_study_runs_every_trial_as_a_dvc_experiment_and_resumes_after_a_crash(prefect_api, repo_copy):
    set_tune(repo_copy, {"variant": "torch", "trials": 3, "workers": 2, "storage": None,
                         "pruning": {"startup_trials": 1, "warmup_epochs": 0}, "space": SPACE})
    study = run_study(repo_copy, IC)
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    assert len(finished) == 3 and study.best_trial.value is not None
    shown = experiments(repo_copy)
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        name = experiment_name(study, trial.number)
        assert shown[name]["train"] == trial.params  # exactly what was drawn ran
    assert "up to date" in dvc(repo_copy, "status").stdout  # the workspace was never touched

    crashed = study.ask()  # a trial a killed study left running
    resumed = run_study(repo_copy, IC, trials=4)
    assert resumed.trials[crashed.number].state == optuna.trial.TrialState.FAIL
    assert len(resumed.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))) == 4
    assert (repo_copy / "tune" / study.study_name / "optimization_history.png").stat().st_size > 0


def test_bad_study_inputs_are_refused_in_one_line_before_any_trial(repo_copy):
    set_tune(repo_copy, None)
    with pytest.raises(ConfigError, match=f"{IC}.tune: no study declared"):
        run_study(repo_copy, IC)
    unreachable = "postgresql://tune@127.0.0.1:9/study"  # the discard port: nothing listens there
    set_tune(repo_copy, {"variant": "torch", "trials": 1, "workers": 1, "storage": unreachable,
                         "pruning": {"startup_trials": 1, "warmup_epochs": 0}, "space": SPACE})
    with pytest.raises(ConfigError, match=f"{IC}.tune.storage: cannot open {unreachable}"):
        run_study(repo_copy, IC)
    assert not experiments(repo_copy)
