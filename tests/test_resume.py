"""A killed train stage resumes: per-epoch checkpoints, no partial outputs, exactly the same result.

Each framework's train stage runs once uninterrupted; then again in a subprocess that gets
``kill -9`` once its checkpoint shows a completed epoch; the model and DVCLive directories must
then hold nothing, and the rerun must say it resumes and end with byte-identical model files,
``meta.json``, ``metrics.json`` and curves. The image-classification smoke slice is used for torch
and Keras (dropout, shuffled mini-batches, reduce-LR-on-plateau and early stopping all carry state
across epochs), the simple_nn slice for the NumPy network. A checkpoint of other params, seed or
data is refused with the reason. Everything runs on copies in a temporary directory.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from curriculum.frameworks.checkpoints import (
    CheckpointMismatch, Checkpoints, canonical_zip, differences, fingerprint,
)
from curriculum.results import TIMING_FILE
from tests.smoke import BIN_DIR, REPO_ROOT, smoke_params

# The train params of the tests, on top of the smoke slices: learning rates high enough that the
# validation loss stalls well before the last epoch, so early stopping ends the run ``patience``
# epochs after the best one and reduce-LR-on-plateau acts in between.
OVERRIDES = {
    # (fresh augmentation every epoch: a floor under the learning rate keeps the loss moving, so
    # early stopping ends both runs, torch at epoch 30 and Keras at 27, well before the last)
    "image_classification": {"epochs": 60, "learning_rate": 0.004, "early_stopping": {"patience": 8},
                             "reduce_lr": {"factor": 0.5, "patience": 2, "min_lr": 1.0e-3}, "log_every": 100},
    "simple_nn": {"epochs": 200, "learning_rate": 0.05, "early_stopping": {"patience": 60},
                  "reduce_lr": {"factor": 0.5, "patience": 3, "min_lr": 1.0e-4}, "log_every": 1000},
}
CASES = {"torch": "image_classification", "keras": "image_classification", "numpy": "simple_nn"}
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PATH": f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}",
       "TF_CPP_MIN_LOG_LEVEL": "3", "DVC_NO_ANALYTICS": "1"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Processed smoke slices of both projects and a params file with the test's train params."""
    from curriculum.projects import get_project

    root = tmp_path_factory.mktemp("resume")
    params = smoke_params(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()))
    for project, train in OVERRIDES.items():
        params[project]["train"].update(train)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in OVERRIDES:
        project = get_project(name)
        config = project.load_config(root / "params.yaml")
        raw = project.source(config.download.source)(root / "downloads", root / "downloads" / "partial", config.download)
        if project.subsample is not None:
            raw = project.subsample(raw, config)
        project.preprocess(raw, config).write(root / "data" / name)
    return root


def train_command(project: str, variant: str, run: str, params: str = "params.yaml") -> list[str]:
    return [str(BIN_DIR / "python"), "-m", "stages.train", "--project", project, "--variant", variant,
            "--params", params, "--data", f"data/{project}", "--model-dir", f"{run}/models/{variant}",
            "--live-dir", f"{run}/reports/{variant}/train", "--checkpoint-dir", f"{run}/checkpoints/{variant}"]


def train(root: Path, project: str, variant: str, run: str, params: str = "params.yaml") -> subprocess.CompletedProcess:
    return subprocess.run(train_command(project, variant, run, params), cwd=root, env=ENV, capture_output=True, text=True)


def checkpoint_epoch(directory: Path) -> int:
    try:
        return json.loads((directory / "checkpoint.json").read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def kill_at(root: Path, project: str, variant: str, run: str, epoch: int) -> int:
    """Start the train stage, ``kill -9`` it once its checkpoint holds ``epoch`` epochs; the epoch it had."""
    process = subprocess.Popen(train_command(project, variant, run), cwd=root, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = root / run / "checkpoints" / variant
    try:
        while process.poll() is None and checkpoint_epoch(checkpoint) < epoch:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, f"the run ended ({process.returncode}) before it could be killed"
    return checkpoint_epoch(checkpoint)


def results(root: Path, run: str, variant: str) -> dict[str, bytes]:
    """Every file the stage publishes (model directory and DVCLive directory), by relative path;
    not the training time beside the curves (wall-clock: never the same twice)."""
    found = {}
    for base in (root / run / "models" / variant, root / run / "reports" / variant / "train"):
        for path in sorted(base.rglob("*")):
            if path.is_file() and path.name != TIMING_FILE:
                found[str(path.relative_to(root / run))] = path.read_bytes()
    return found


@pytest.mark.parametrize("variant", list(CASES))
def test_a_killed_run_resumes_and_ends_exactly_like_an_uninterrupted_one(workdir, variant):
    project = CASES[variant]
    whole, killed = f"whole-{variant}", f"killed-{variant}"
    finished = train(workdir, project, variant, whole)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    expected = results(workdir, whole, variant)
    val_loss = [float(line.split("\t")[1]) for line in
                expected[f"reports/{variant}/train/plots/metrics/eval/loss.tsv"].decode().splitlines()[1:]]
    epochs = len(val_loss)
    # Kill right after the best epoch: every later epoch then fails to improve, so a resumed run
    # that lost the early-stopping or plateau counters (or the RNG states) would end differently.
    kill_epoch = val_loss.index(min(val_loss)) + 1
    assert 2 <= kill_epoch < epochs
    assert not (workdir / whole / "checkpoints" / variant).exists()  # a finished run deletes its checkpoint

    killed_at = kill_at(workdir, project, variant, killed, kill_epoch)
    assert kill_epoch <= killed_at < epochs
    # nothing where DVC looks: no model directory (nor its staging sibling), no metrics, no curves
    assert sorted(path.name for path in (workdir / killed).iterdir()) == ["checkpoints"]

    resumed = train(workdir, project, variant, killed)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming from epoch {killed_at + 1}" in resumed.stdout
    got = results(workdir, killed, variant)
    assert got.keys() == expected.keys()
    assert [name for name in got if got[name] != expected[name]] == []  # byte for byte: model, meta, metrics, curves
    assert not (workdir / killed / "checkpoints" / variant).exists()
    timing = json.loads((workdir / killed / "reports" / variant / "train" / TIMING_FILE).read_text())
    assert timing["resumed_from_epoch"] == killed_at  # the time shown is the resumed run's own


def test_keras_models_are_canonical_archives(workdir):
    """What makes two identical Keras trainings byte-identical: no save date, fixed zip entries
    (the resumed-run test above compares two trainings in different processes byte for byte)."""
    path = workdir / "whole-keras" / "models" / "keras" / "model.keras"
    if not path.exists():
        assert train(workdir, "image_classification", "keras", "whole-keras").returncode == 0
    with zipfile.ZipFile(path) as archive:
        assert [info.filename for info in archive.infolist()] == sorted(archive.namelist())
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert "date_saved" not in json.loads(archive.read("metadata.json"))
        assert "model.weights.h5" in archive.namelist()
    assert canonical_zip(path.read_bytes()) == path.read_bytes()


def test_a_checkpoint_of_other_params_or_seed_is_refused_naming_the_reason(workdir):
    killed_at = kill_at(workdir, "simple_nn", "numpy", "refused", 5)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    changed = {"lr.yaml": ("train", "learning_rate", 0.01), "seed.yaml": (None, "seed", 7)}
    for name, (section, key, value) in changed.items():
        other = json.loads(json.dumps(params))
        (other["simple_nn"][section] if section else other["simple_nn"])[key] = value
        (workdir / name).write_text(yaml.safe_dump(other, sort_keys=False))
        refused = train(workdir, "simple_nn", "numpy", "refused", params=name)
        assert refused.returncode != 0
        message = refused.stderr.strip().splitlines()[-1]
        assert ("params (train.learning_rate: 0.05 -> 0.01)" if key == "learning_rate" else "seed (42 -> 7)") in message
        assert "delete the directory" in message and "refused/checkpoints/numpy" in message
        assert checkpoint_epoch(workdir / "refused" / "checkpoints" / "numpy") == killed_at  # left as it was
    resumed = train(workdir, "simple_nn", "numpy", "refused")
    assert resumed.returncode == 0 and f"resuming from epoch {killed_at + 1}" in resumed.stdout


def test_checkpoints_commit_atomically_and_name_what_differs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # DVCLive looks for a DVC repository from here
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.npz").write_bytes(b"one")
    meta = {"project": "p", "variant": "v", "train": {"epochs": 3}}
    directory = tmp_path / "checkpoint"
    checkpoints = Checkpoints(directory, fingerprint("p", "v", meta, 1, data))
    assert checkpoints.load() is None
    with checkpoints.live() as live:
        for epoch in (1, 2):
            live.log_metric("train/loss", np.float32(0.5) / epoch)
            live.log_metric("eval/loss", 1.0 / epoch)
            live.next_step()
            checkpoints.save(epoch, False, {"epoch": epoch},
                             lambda folder, epoch=epoch: (folder / "state.bin").write_bytes(bytes([epoch])))
    (directory / ".epoch-0003.tmp").mkdir()  # a kill in the middle of writing epoch 3
    again = Checkpoints(directory, fingerprint("p", "v", meta, 1, data))
    resumed = again.load()
    assert (resumed.epoch, resumed.state, (resumed.files / "state.bin").read_bytes()) == (2, {"epoch": 2}, b"\x02")
    assert sorted(path.name for path in directory.iterdir()) == ["checkpoint.json", "epoch-0002"]
    with again.live() as live:  # the DVCLive history comes back, types included
        pass
    loss = (directory / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text()
    assert loss == f"step\tloss\n0\t{np.float32(0.5)}\n1\t{np.float32(0.25)}\n"

    def refusal(other_meta: dict, seed: int) -> str:
        with pytest.raises(CheckpointMismatch) as error:
            Checkpoints(directory, fingerprint("p", "v", other_meta, seed, data)).load()
        return str(error.value)

    assert "params (train.epochs: 3 -> 4)" in refusal({**meta, "train": {"epochs": 4}}, 1)
    assert "seed (1 -> 2)" in refusal(meta, 2)
    (data / "train.npz").write_bytes(b"two")
    message = refusal(meta, 1)
    assert "data (" in message and "params" not in message and f"rm -r {directory}" in message
    assert "\n" not in message
    saved = fingerprint("p", "v", meta, 1, data)
    edited = {**saved, "code": {"curriculum/models/torch_mlp.py": "0" * 64}}
    assert differences(saved, edited) == ["code (curriculum/models/torch_mlp.py changed)"]
    shutil.rmtree(directory)
