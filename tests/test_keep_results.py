"""Nothing good is thrown away: every stage is run-cached, a reverted param restores its results
without retraining, and bad params are stopped before DVC removes any output."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curriculum.results import TIMING_FILE
from pipeline.params_check import params_problems
from tests.smoke import commit, dotted_parent, dvc, stages_run

SNN = "simple_nn"


def tracked_results(root: Path) -> dict[str, bytes]:
    """Every git-tracked result (metrics, curves, plots) and the lock, by path."""
    paths = [root / "dvc.lock", *sorted((root / "reports" / SNN).rglob("*"))]
    return {str(path.relative_to(root)): path.read_bytes() for path in paths
            if path.is_file() and "data_docs" not in path.parts and path.name != TIMING_FILE}


def set_param(root: Path, dotted: str, value) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    section, key = dotted_parent(params, dotted)
    if value is None:
        del section[key]
    else:
        section[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def test_every_training_stage_gets_a_run_cache_entry(built_repo):
    """DVC skips the run-cache for a stage with an uncached output that is not a metric or a
    plot; the stages that train, score and export must still be restorable from it."""
    stages = [name for name in dvc(built_repo, "stage", "list", "--name-only").stdout.split()
              if name.startswith(("train@", "evaluate@", "export@"))]
    entries = [yaml.safe_load(path.read_text()) for path in (built_repo / ".dvc/cache/runs").rglob("*")
               if path.is_file()]
    for stage in stages:
        kind, _, key = stage.partition("@")
        project, _, variant = key.partition("-")
        where = f"--project {project}" + (f" --variant {variant}" if variant else "")
        assert any(entry["cmd"].startswith(f"python -m stages.{kind} ") and where in entry["cmd"]
                   for entry in entries), f"no run-cache entry for {stage}"


@pytest.mark.slow  # 41 s; every training stage's run-cache entry stays checked in the default suite: moved when the real-server deployment test joined the default suite
def test_reverting_a_param_restores_results_from_the_run_cache(repo_copy):
    commit(repo_copy, "the built results")
    before = tracked_results(repo_copy)
    set_param(repo_copy, f"{SNN}.variants.torch.train", {"learning_rate": 0.05})  # one variant retrains
    changed = stages_run(dvc(repo_copy, "repro").stdout)
    assert f"train@{SNN}-torch" in changed and f"train@{SNN}-keras" not in changed
    assert tracked_results(repo_copy) != before

    git(repo_copy, "checkout", "--", "params.yaml")
    restored = dvc(repo_copy, "repro")
    assert not [name for name in stages_run(restored.stdout) if name.startswith(("train@", "evaluate@"))], \
        "a reverted param retrained instead of restoring from the run-cache"
    assert f"Stage 'train@{SNN}-torch' is cached - skipping run" in restored.stdout
    assert tracked_results(repo_copy) == before
    assert git(repo_copy, "status", "--porcelain", "--", "reports", "dvc.lock") == ""


def test_a_failed_stage_is_restored_by_one_repro_after_the_fix(repo_copy):
    """A bad param that reaches a stage (`dvc repro` run directly) fails it, and DVC has removed
    the stage's outputs by then; reverting the param and running `dvc repro` brings back every
    previous result from the cache, without training."""
    before = tracked_results(repo_copy)
    set_param(repo_copy, f"{SNN}.evaluate", None)
    failed = dvc(repo_copy, "repro", check=False)
    assert failed.returncode != 0
    assert f"{SNN}.evaluate" in failed.stdout + failed.stderr  # the stage names the missing section

    git(repo_copy, "checkout", "--", "params.yaml")
    restored = dvc(repo_copy, "repro")
    assert not [name for name in stages_run(restored.stdout) if name.startswith("train@")]
    assert tracked_results(repo_copy) == before


def test_params_check_stops_bad_params_before_any_output_is_touched(repo_copy):
    before = tracked_results(repo_copy)
    set_param(repo_copy, f"{SNN}.evaluate", None)
    set_param(repo_copy, f"{SNN}.train.batch_size", 0)
    set_param(repo_copy, f"{SNN}.train.early_stoping", {"patience": 3})
    problems = params_problems(repo_copy / "params.yaml")
    joined = "\n".join(problems)
    assert f"{SNN}.evaluate" in joined and f"{SNN}.train.batch_size" in joined
    assert f"{SNN}.train.early_stoping" in joined
    assert all(line.startswith(SNN) for line in problems), problems  # the other projects are fine

    result = subprocess.run([sys.executable, "-m", "pipeline", "--repo", str(repo_copy), "check-params"],
                            cwd=repo_copy, capture_output=True, text=True)
    assert result.returncode != 0 and f"{SNN}.train.batch_size" in result.stderr
    assert tracked_results(repo_copy) == before
    commit(repo_copy, "bad params (never run)")


@pytest.mark.slow  # 24 s: moved when the real-server deployment test joined the default suite
def test_a_display_only_param_retrains_to_the_same_model_and_reruns_nothing_after(repo_copy):
    """``log_every`` only changes what is printed: train reruns (DVC sees its params), gives
    byte-identical models -- Keras' archives included -- so evaluate and export stay cached."""
    before = tracked_results(repo_copy)
    set_param(repo_copy, f"{SNN}.train.log_every", 3)
    ran = stages_run(dvc(repo_copy, "repro").stdout)
    assert sorted(ran) == sorted(f"train@{SNN}-{framework}" for framework in ("torch", "keras", "numpy"))
    after = tracked_results(repo_copy)
    assert {path: data for path, data in after.items() if path != "dvc.lock"} == \
        {path: data for path, data in before.items() if path != "dvc.lock"}
