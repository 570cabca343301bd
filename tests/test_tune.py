"""`python -m pipeline tune`: a tiny Optuna study on the smoke copy, every trial a real DVC
experiment run through Prefect -- two workers writing one PostgreSQL study, killed mid-trial and
resumed -- and the bad inputs refused before any trial."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from curriculum.config import ConfigError
from curriculum.tuning import committed_values
from pipeline.tune import experiment_name, load_tune, run_study
from tests.smoke import commit, dvc

IC = "image_classification"
SPACE = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
         "batch_size": {"type": "categorical", "choices": [32, 64]}}


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


def tiny_study(**changes) -> dict:
    return {"variant": "torch", "metric": "val_accuracy", "trials": 3, "workers": 2, "storage": None,
            "pruning": {"startup_trials": 1, "warmup_epochs": 0}, "space": SPACE, **changes}


def finished(study) -> list:
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))


@pytest.mark.slow  # 69 s: moved out of the default suite's 20 minutes when the detection project joined the smoke build
def test_two_workers_share_a_postgresql_study_killed_mid_trial_and_resumed(prefect_api, postgres_url, repo_copy):
    """`python -m pipeline tune` with two workers on a real PostgreSQL server, SIGKILLed with
    trials running, then resumed: only the killed trials are lost, and every finished trial is a
    DVC experiment of exactly the values drawn for it."""
    set_tune(repo_copy, tiny_study(storage=postgres_url))
    command = [sys.executable, "-m", "pipeline", "--repo", str(repo_copy), "tune", IC]
    killed = subprocess.Popen(command, cwd=repo_copy, start_new_session=True, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for line in killed.stdout:
            if "trial 2 (" in line:  # a first trial finished, the third asked
                time.sleep(3)  # its dvc exp run under way
                break
        else:
            pytest.fail("the study ended before its third trial began")
    finally:
        os.killpg(killed.pid, signal.SIGKILL)  # the orchestrator and its dvc exp runs, mid-trial
        killed.wait()

    study = run_study(repo_copy, IC)
    states = optuna.trial.TrialState
    assert study.trials[2].state == states.FAIL  # killed, failed once it stopped beating
    assert len(finished(study)) == 3 and study.best_trial.value is not None
    assert [trial.state for trial in study.trials if trial.state not in (states.COMPLETE, states.PRUNED)] == \
        [states.FAIL] * (len(study.trials) - 3)  # nothing left running
    first, second = study.trials[:2]
    assert second.datetime_start < first.datetime_complete  # two writers, side by side
    _, config, tune, _, _ = load_tune(repo_copy, IC, None)
    assert first.user_attrs == {"committed": True} and first.params == committed_values(tune, config)
    shown = experiments(repo_copy)
    for trial in study.get_trials(states=(states.COMPLETE,)):
        assert shown[experiment_name(study, trial.number)]["train"] == trial.params  # exactly what was drawn ran
        assert 0 < trial.value <= 1  # a validation accuracy
    assert "up to date" in dvc(repo_copy, "status").stdout  # the workspace was never touched
    assert (repo_copy / "tune" / study.study_name / "optimization_history.png").stat().st_size > 0


BAD_STUDIES = [
    (None, "tune: no study declared"),
    (tiny_study(space={}), "tune.space: .*at least 1 item"),
    (tiny_study(space={"learnin_rate": SPACE["learning_rate"]}), "tune.space.learnin_rate: not a train key"),
    (tiny_study(metric="test_accuracy"), "tune.metric: 'test_accuracy' is not a validation value the task logs"),
    (tiny_study(storage="postgresql://tune@127.0.0.1:9/study"),  # the discard port: nothing listens there
     "tune.storage: cannot open postgresql://tune@127.0.0.1:9/study: OperationalError"),
]


def test_bad_study_inputs_are_refused_in_one_line_before_any_trial(repo_copy):
    for tune, message in BAD_STUDIES:
        set_tune(repo_copy, tune)
        with pytest.raises(ConfigError, match=f"^{IC}.{message}") as refused:
            run_study(repo_copy, IC)
        assert "\n" not in str(refused.value), refused.value
    assert not experiments(repo_copy) and not (repo_copy / "tune").exists()
    assert not dvc(repo_copy, "status", "--json").stdout.strip("{}\n")  # nothing changed in the workspace
