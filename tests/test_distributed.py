"""Training beyond one process or on another device: PyTorch DDP under torchrun, the device param."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from curriculum.config import ConfigError
from curriculum.frameworks.torch_backend import training_device
from curriculum.projects import get_project
from tests.smoke import REPO_ROOT

IC = "image_classification"


def train_stage(built_repo: Path, work: Path, processes: int) -> subprocess.CompletedProcess:
    """The image CNN's train stage on the tiny slice, in ``processes`` processes of one thread each,
    without dropout: then two processes each taking half of every (even-sized) batch and averaging
    their gradients compute what one process computes on the whole batch."""
    params = yaml.safe_load((built_repo / "params.yaml").read_text())
    params[IC]["train"].update(dropout=0.0, epochs=3, batch_size=16)
    params[IC]["variants"]["torch"]["train"] = {"processes": processes, "threads": 1}
    run_dir = work / f"processes-{processes}"
    run_dir.mkdir()
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "stages.train", "--project", IC, "--variant", "torch", "--params", str(run_dir / "params.yaml"),
         "--data", str(built_repo / f"data/{IC}/processed"), "--model-dir", str(run_dir / "model"),
         "--live-dir", str(run_dir / "live"), "--checkpoint-dir", str(run_dir / "checkpoints")],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True)


def test_ddp_under_torchrun_trains_what_one_process_trains(built_repo, tmp_path):
    from curriculum.layout import ProcessedData

    train_size = len(ProcessedData.read(built_repo / f"data/{IC}/processed").split("train")["y"])
    assert train_size % 16 % 2 == 0, "the test needs every batch to split evenly between two processes"
    single = train_stage(built_repo, tmp_path, 1)
    ddp = train_stage(built_repo, tmp_path, 2)

    assert "training in 2 processes" in ddp.stdout and "torch.distributed.run" in ddp.stdout
    assert ddp.stdout.count("epoch 3:") == 1  # rank 0 alone prints, logs and writes
    for run in ("processes-1", "processes-2"):
        assert sorted(p.name for p in (tmp_path / run / "model").iterdir()) == ["meta.json", "model.pt"]
        assert not (tmp_path / run / "checkpoints").exists()
    curves = [json.loads((tmp_path / run / "live/metrics.json").read_text()) for run in ("processes-1", "processes-2")]
    assert curves[0]["step"] == curves[1]["step"] == 2
    assert curves[1]["eval"]["loss"] == pytest.approx(curves[0]["eval"]["loss"], rel=1e-4)
    weights = [torch.load(tmp_path / run / "model/model.pt", weights_only=True) for run in ("processes-1", "processes-2")]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-4, atol=1e-5)
    meta = json.loads((tmp_path / "processes-2/model/meta.json").read_text())
    assert meta["train"]["processes"] == 2  # part of the model's identity: DDP sums in another order


def test_processes_above_one_need_the_torch_back_end(tmp_path):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params[IC]["train"]["processes"] = 2  # the Keras variant too
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ConfigError, match=r"variants\.keras: train\.processes > 1 needs framework torch.*keras-team/keras#20585"):
        get_project(IC).load_config(tmp_path / "params.yaml")


def test_device_auto_is_cuda_only_where_torch_sees_a_gpu():
    assert training_device("cpu") == torch.device("cpu")
    assert training_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="train.device is 'cuda' but torch sees no CUDA device"):
            training_device("cuda")
