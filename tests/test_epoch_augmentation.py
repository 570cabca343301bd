"""Per-epoch, seeded augmentation: a task's own training inputs every epoch, identical in every back end.

Tiny 8x8 images through both back ends' real ``fit``, with a first layer that records the batches
training feeds it: torch and Keras see the very batches :meth:`Task.epoch_batches` gives, in its
order, in mini-batches of ``train.batch_size`` (the last one smaller); fresh images every epoch;
and a run resumed from a checkpoint (Keras from ``initial_epoch``) trains on exactly the epochs an
uninterrupted run does.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from curriculum.augment import augment_epoch
from curriculum.frameworks.checkpoints import Checkpoints, fingerprint
from curriculum.layout import ProcessedData
from curriculum.projects import get_project
from curriculum.projects.image_classification import Augment, CNNTrain
from curriculum.tasks.classification import Classification

SEED, BATCH, N_TRAIN, SHAPE = 3, 4, 10, (8, 8, 1)  # 10 examples: batches of 4, 4 and 2
AUGMENT = Augment.model_validate({"rotation_range": 20, "width_shift_range": 0.1, "height_shift_range": 0.1,
                                  "zoom_range": 0.1, "horizontal_flip": True})
TASK = Classification(binary=False, augment_images=True)


def train_config(epochs: int, augment: Augment | None = AUGMENT, **changes) -> CNNTrain:
    return CNNTrain.model_validate({
        "epochs": epochs, "batch_size": BATCH, "learning_rate": 0.01, "l2": 0.0, "early_stopping": None,
        "reduce_lr": None, "log_every": 100, "threads": 1, "processes": 1, "device": "cpu", "monitor": "loss", "dropout": 0.0, "batch_norm": False,
        "augment": augment.model_dump() if augment is not None else None, **changes,
    })


def tiny_data() -> ProcessedData:
    rng = np.random.default_rng(0)
    split = lambda n: {"x": rng.random((n, *SHAPE), dtype=np.float32), "y": np.arange(n) % 3}  # noqa: E731
    return ProcessedData(splits={"train": split(N_TRAIN), "val": split(5), "test": split(5)},
                         info={"class_names": ["a", "b", "c"]})


def expected_batches(data: ProcessedData, epochs: range, train: CNNTrain) -> list[np.ndarray]:
    """What training must be fed: each epoch's task inputs, in the task's order, cut into batches."""
    batches = []
    for epoch in epochs:
        x, order = TASK.epoch_batches(data.split("train"), epoch, train, SEED)
        batches += [x[order[start:start + BATCH]] for start in range(0, len(order), BATCH)]
    return batches


# --------------------------------------------------------------------------- recording models


def torch_model(record: list):
    from torch import nn

    class Recorder(nn.Module):
        def forward(self, x):
            if self.training:
                record.append(x.detach().numpy().copy())
            return x

    return nn.Sequential(Recorder(), nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), 3))


KERAS_RECORD: list[np.ndarray] = []


def keras_model():
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="test_epoch_augmentation")
    class Recorder(keras.layers.Layer):
        """The identity; while training, a py_function copies each batch out of the graph."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.supports_jit = False

        def call(self, x, training=None):
            if not training:
                return x

            def record(batch):
                KERAS_RECORD.append(batch.numpy().copy())
                return batch

            out = tf.py_function(record, [x], Tout=x.dtype)
            out.set_shape(x.shape)
            return out

    # fixed names: a resumed run's variables must have the paths the checkpoint holds
    return keras.Sequential([keras.Input(SHAPE), Recorder(name="recorder"), keras.layers.Flatten(name="flatten"),
                             keras.layers.Dense(3, activation="softmax", name="dense")], name="tiny")


def train_recorded(framework: str, data: ProcessedData, train: CNNTrain, directory: Path,
                   checkpoint_dir: Path | None = None, resume_from: int | None = None,
                   task: Classification = TASK) -> list[np.ndarray]:
    """Build a fresh recording model and run the back end's ``fit`` (with checkpoints in
    ``checkpoint_dir``, resuming from epoch ``resume_from``); the training batches it saw."""
    from dvclive import Live

    if framework == "torch":
        from curriculum.frameworks import torch_backend as backend
    else:
        import keras

        from curriculum.frameworks import keras_backend as backend
        keras.utils.clear_session()  # names from 0 again ("adam", not "adam_1"): the checkpoint's variable paths
    backend.seed_everything(SEED)
    record: list[np.ndarray] = []
    model = torch_model(record) if framework == "torch" else keras_model()
    KERAS_RECORD.clear()
    directory.mkdir(parents=True)
    if checkpoint_dir is None:
        with Live(dir=str(directory / "live"), save_dvc_exp=False, dvcyaml=None) as live:
            backend.fit(model, data, task, train, SEED, directory / "model", live)
    else:
        no_data = checkpoint_dir.parent / "no-data"  # the fingerprint's data: the same for every run
        checkpoints = Checkpoints(checkpoint_dir, fingerprint("tiny", framework, {"test": 1}, SEED, no_data))
        resumed = checkpoints.load()
        assert (resumed.epoch if resumed is not None else None) == resume_from
        with checkpoints.live() as live:
            backend.fit(model, data, TASK, train, SEED, directory / "model", live, checkpoints)
    return record if framework == "torch" else list(KERAS_RECORD)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], list[np.ndarray]]:
    """Per framework: a whole 3-epoch run; a run stopped after epoch 1 (its checkpoint kept), then
    resumed to epoch 3 from that checkpoint."""
    root = tmp_path_factory.mktemp("epoch_augmentation")
    data = tiny_data()
    found = {}
    cwd = os.getcwd()
    os.chdir(root)  # DVCLive looks for a DVC repository from here
    try:
        for framework in ("torch", "keras"):
            found[framework, "whole"] = train_recorded(framework, data, train_config(3), root / framework / "whole")
            checkpoint = root / framework / "checkpoint"
            found[framework, "first"] = train_recorded(framework, data, train_config(1), root / framework / "first",
                                                       checkpoint)
            found[framework, "resumed"] = train_recorded(framework, data, train_config(3),
                                                         root / framework / "resumed", checkpoint, resume_from=1)
    finally:
        os.chdir(cwd)
    return found


# --------------------------------------------------------------------------- tests


def assert_same_batches(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert [batch.shape for batch in got] == [batch.shape for batch in expected]
    for got_batch, expected_batch in zip(got, expected):
        np.testing.assert_array_equal(got_batch, expected_batch)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_fit_trains_on_the_tasks_batches_of_each_epoch(runs, framework):
    data, train = tiny_data(), train_config(3)
    whole = runs[framework, "whole"]
    assert [len(batch) for batch in whole] == [4, 4, 2] * 3
    assert_same_batches(whole, expected_batches(data, range(1, 4), train))
    # augmented, not the split's own images
    assert not any(np.allclose(np.sort(batch, axis=0), np.sort(data.split("train")["x"][:len(batch)], axis=0))
                   for batch in whole)


def test_torch_and_keras_see_identical_batches(runs):
    assert_same_batches(runs["keras", "whole"], runs["torch", "whole"])


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_a_resumed_run_regenerates_exactly_the_epochs_it_missed(runs, framework):
    """Keras resumes with ``fit(initial_epoch=1)``: its data must then be epochs 2 and 3, not 1 and 2."""
    whole = runs[framework, "whole"]
    assert_same_batches(runs[framework, "first"], whole[:3])
    assert_same_batches(runs[framework, "resumed"], whole[3:])


def test_keras_dataset_indexes_targets_and_weights_with_the_same_order():
    from curriculum.frameworks.keras_backend import _EpochBatches

    data, train = tiny_data(), train_config(2)
    split = data.split("train")
    y = split["y"]
    weights = np.linspace(1, 2, len(y), dtype=np.float32)
    dataset = _EpochBatches(TASK, split, train, SEED, y, weights, 1, TASK.epoch_batches(split, 1, train, SEED))
    assert len(dataset) == 3
    for epoch in (1, 2):
        dataset.set_epoch(epoch)
        x, order = TASK.epoch_batches(split, epoch, train, SEED)
        for index in range(len(dataset)):
            rows = order[index * BATCH:(index + 1) * BATCH]
            xb, yb, wb = dataset[index]
            np.testing.assert_array_equal(xb, x[rows])
            np.testing.assert_array_equal(yb, y[rows])
            np.testing.assert_array_equal(wb, weights[rows])


def test_torch_keeps_its_own_shuffle_when_the_task_draws_no_batches(tmp_path, monkeypatch):
    """A task without ``epoch_batches`` (not images): the split's inputs in ``torch.randperm`` order, as before."""
    import torch

    monkeypatch.chdir(tmp_path)
    data = tiny_data()
    got = train_recorded("torch", data, train_config(2), tmp_path / "run", task=Classification(binary=False))
    shuffle = torch.Generator().manual_seed(SEED)
    x = data.split("train")["x"]
    expected = []
    for _ in range(2):
        order = torch.randperm(N_TRAIN, generator=shuffle).numpy()
        expected += [x[order[start:start + BATCH]] for start in range(0, N_TRAIN, BATCH)]
    assert_same_batches(got, expected)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_without_augmentation_both_frameworks_take_the_images_as_they_are_in_one_order(tmp_path, monkeypatch, framework):
    """``augment: null`` on an image task: no transform, but still the task's seeded order, so torch
    and Keras train on the same batches (Keras' own shuffle repeats one order every epoch)."""
    monkeypatch.chdir(tmp_path)
    data, train = tiny_data(), train_config(2, augment=None)
    got = train_recorded(framework, data, train, tmp_path / "run")
    split = data.split("train")
    expected = []
    for epoch in (1, 2):
        x, order = TASK.epoch_batches(split, epoch, train, SEED)
        np.testing.assert_array_equal(x, split["x"])
        expected += [x[order[start:start + BATCH]] for start in range(0, N_TRAIN, BATCH)]
    assert_same_batches(got, expected)


def test_epochs_differ_and_each_epoch_is_reproducible():
    data, train = tiny_data(), train_config(3)
    split = data.split("train")
    first_x, first_order = TASK.epoch_batches(split, 1, train, SEED)
    again_x, again_order = TASK.epoch_batches(split, 1, train, SEED)
    second_x, second_order = TASK.epoch_batches(split, 2, train, SEED)
    other_seed_x, _ = TASK.epoch_batches(split, 1, train, SEED + 1)
    np.testing.assert_array_equal(first_x, again_x)
    np.testing.assert_array_equal(first_order, again_order)
    assert first_x.shape == split["x"].shape and first_x.dtype == split["x"].dtype
    assert sorted(first_order.tolist()) == list(range(N_TRAIN))  # a permutation of the examples
    for other in (second_x, other_seed_x):
        assert all(not np.allclose(a, b) for a, b in zip(first_x, other))  # every image changes
    assert not np.array_equal(first_order, second_order)
    np.testing.assert_array_equal(first_x, augment_epoch(split["x"], AUGMENT, SEED, 1))


def test_tasks_without_images_draw_no_epoch_batches():
    data = tiny_data()
    split = data.split("train")
    assert Classification(binary=False).epoch_batches(split, 1, train_config(2), SEED) is None
    for name in ("simple_nn", "forecasting"):  # the default: every other project's task
        assert get_project(name).task.epoch_batches(split, 1, train_config(2), SEED) is None


def test_image_classification_augments_in_training_only():
    project = get_project("image_classification")
    config = project.load_config(Path(__file__).resolve().parents[1] / "params.yaml")
    assert project.task.augment_images and "augment" not in type(config.preprocess).model_fields
    assert config.train.augment is None or isinstance(config.train.augment, Augment)
    raw = {"x": np.zeros((40, *SHAPE), dtype=np.uint8), "y": np.arange(40) % 4, "class_names": np.array(list("abcd"))}
    processed = project.preprocess(raw, config)
    assert sum(len(processed.split(name)["y"]) for name in ("train", "val", "test")) == 40  # no copies added
