"""The transfer_learning project's own logic: the low-data splits, the user's image folder as a
source (with a clear error for a corrupt file), the frozen stems cached by preprocess and put back
in front by export, and the variants' training settings."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from curriculum.image_folder import ImageFolderError
from curriculum.projects import get_project
from curriculum.projects.transfer_learning import STEMS, nets, split_indices
from tests.smoke import REPO_ROOT

PROJECT = get_project("transfer_learning")


def test_low_data_splits_take_n_per_class_seeded_and_disjoint():
    y = np.repeat(np.arange(10), 600)
    parts = split_indices(y, {"val": 100, "train": 100}, seed=42)
    assert [len(parts[name]) for name in ("val", "train")] == [1000, 1000]
    assert not set(parts["val"]) & set(parts["train"])
    for name in ("val", "train"):
        assert np.bincount(y[parts[name]]).tolist() == [100] * 10
    again = split_indices(y, {"val": 100, "train": 100}, seed=42)
    assert all(np.array_equal(parts[name], again[name]) for name in parts)
    other = split_indices(y, {"val": 100, "train": 100}, seed=43)
    assert not np.array_equal(parts["train"], other["train"])
    # The same val images, and training images from the rest, whatever N is (null: all of them).
    everything = split_indices(y, {"val": 100, "train": None}, seed=42)
    assert np.array_equal(everything["val"], parts["val"]) and len(everything["train"]) == 5000
    assert set(parts["train"]) <= set(everything["train"])
    with pytest.raises(ValueError, match="class 0 has 600 images: too few for val 100, train 600"):
        split_indices(y, {"val": 100, "train": 600}, seed=42)


def _folder(root, corrupt: bool = False):
    for label, shade in (("boots", 40), ("shirts", 200)):
        (root / label).mkdir(parents=True)
        for index in range(3):
            Image.new("L", (40, 30), color=shade + index).save(root / label / f"{index}.png")
    if corrupt:
        (root / "shirts" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def _download(tmp_path, root):
    config = PROJECT.config.model_validate({
        **PROJECT.load_config(REPO_ROOT / "params.yaml").model_dump(by_alias=True),
        "download": {"source": "image_folder", "max_per_class": None,
                     "image_folder": {"root": str(root) if root else None, "height": 28, "width": 28, "channels": 1}},
    })
    source = PROJECT.source("image_folder")
    return source(tmp_path / "downloads", tmp_path / "downloads" / "partial", config.download)


def test_a_corrupt_image_in_the_users_folder_is_named(tmp_path):
    _folder(tmp_path / "images", corrupt=True)
    with pytest.raises(ImageFolderError, match=r"shirts/broken\.jpg .*cannot be read as images"):
        _download(tmp_path, tmp_path / "images")


def test_the_folder_source_needs_its_root(tmp_path):
    with pytest.raises(ValueError, match=r"transfer_learning\.download\.image_folder\.root: set it"):
        _download(tmp_path, None)


def test_models_on_stems_take_the_cached_arrays_and_raw_images_stay_for_export():
    from curriculum.layout import ProcessedData

    x = np.zeros((4, 28, 28, 1), np.float32)
    split = {"x": x, "y": np.arange(4), nets.FEATURES: np.ones((4, 1280), np.float32),
             nets.TRUNK: np.ones((4, 6, 6, 96), np.float32)}
    data = ProcessedData(splits={"train": split, "val": split, "test": split},
                         info={"class_names": list("abcd"), "model_spec": {"cut": 12, "image_size": 96, "seed": 1}})
    assert PROJECT.model_data(data, "small_cnn") is data
    head = PROJECT.model_data(data, "mobilenet_v2_head")
    assert head.split("test")["x"].shape == (4, 1280) and data.split("test")["x"].shape == (4, 28, 28, 1)
    assert PROJECT.model_spec(PROJECT.model_data(data, "mobilenet_v2_top")) == {
        "input_shape": [6, 6, 96], "n_outputs": 4, "cut": 12, "image_size": 96, "seed": 1}
    assert set(STEMS) == {"mobilenet_v2_head", "mobilenet_v2_top"}


def test_variants_share_the_project_train_section_and_differ_where_they_say():
    config = PROJECT.load_config(REPO_ROOT / "params.yaml")
    frameworks = {name: variant.framework for name, variant in config.variants.items()}
    assert sorted(frameworks.values()) == ["keras"] * 3 + ["torch"] * 3
    for kind in ("scratch", "frozen", "fine-tune"):  # each model trains alike in both frameworks
        assert config.variant_train(f"{kind}-keras") == config.variant_train(f"{kind}-torch")
    assert config.variant_train("scratch-torch").augment is not None  # images: augmented afresh every epoch
    assert config.variant_train("fine-tune-torch").learning_rate < config.variant_train("frozen-torch").learning_rate
