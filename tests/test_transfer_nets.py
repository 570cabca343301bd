"""Transfer-learning networks on the ImageNet MobileNetV2: torch and Keras agree on raw 28x28 grey
images (in-graph preprocessing included), stem and top compose to the whole network, frozen weights
stay frozen, fine-tuning trains only the top blocks, batch norm never leaves inference mode, and
the torch net exports to ONNX."""
from __future__ import annotations

import re

import numpy as np
import pytest

from curriculum.backbones import mobilenet_v2 as mb
from curriculum.backbones import transfer

torch = pytest.importorskip("torch")

IMAGE_SIZE = 64  # small, to keep the suite fast; the project uses more
N_CLASSES = 10
PROBA_TOLERANCE = 1e-4
FINE_TUNE_FROM = 14


@pytest.fixture(scope="session")
def images():
    """Fashion-MNIST-like raw inputs: (8, 28, 28, 1) float32 in [0, 1] (random uint8 / 255)."""
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, size=(8, 28, 28, 1), dtype=np.uint8) / np.float32(255)).astype(np.float32)


@pytest.fixture(scope="session")
def labels():
    return np.arange(8) % N_CLASSES


def torch_proba(net, x: np.ndarray) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()


def torch_snapshot(net) -> dict[str, np.ndarray]:
    """Every parameter and buffer (running stats included), copied."""
    return {name: t.detach().numpy().copy() for name, t in net.state_dict().items()}


def keras_snapshot(model) -> dict[str, np.ndarray]:
    return {v.path: np.array(v.numpy()) for v in model.weights}


def torch_step(net, x: np.ndarray, y: np.ndarray) -> None:
    net.train()
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def keras_step(model, x: np.ndarray, y: np.ndarray) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.train_on_batch(x, y)


def changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if not np.array_equal(before[name], after[name])}


def block(name: str) -> int | None:
    """The feature block a (possibly nested) parameter name or variable path belongs to."""
    match = re.search(r"features\.(\d+)[./]", name)
    return int(match[1]) if match else None


def is_running_stat(name: str) -> bool:
    return name.endswith(("running_mean", "running_var", "num_batches_tracked", "moving_mean", "moving_variance"))


def test_head_weights_are_seeded_glorot():
    head = transfer.head_weights(N_CLASSES, seed=3)
    assert head["kernel"].shape == (transfer.FEATURES, N_CLASSES) and head["kernel"].dtype == np.float32
    assert np.abs(head["kernel"]).max() <= np.sqrt(6 / (transfer.FEATURES + N_CLASSES))
    assert not head["bias"].any()
    np.testing.assert_array_equal(head["kernel"], transfer.head_weights(N_CLASSES, seed=3)["kernel"])
    assert not np.array_equal(head["kernel"], transfer.head_weights(N_CLASSES, seed=4)["kernel"])
    with pytest.raises(ValueError, match="cut between stem and top"):
        transfer.torch_transfer_net({}, N_CLASSES, IMAGE_SIZE, cut=20)


def test_in_graph_preprocessing_matches_imagenet_recipe(state_dict, images):
    """The torch net's preprocessing is resize -> repeat -> normalise, as documented."""
    import torch.nn.functional as F

    net = transfer.torch_transfer_net(state_dict, N_CLASSES, IMAGE_SIZE)
    x = torch.from_numpy(images)
    got = net.stem.preprocess(x)
    resized = F.interpolate(x.permute(0, 3, 1, 2), size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    rgb = resized.expand(-1, 3, -1, -1).numpy()
    expected = (rgb - np.reshape(transfer.IMAGENET_MEAN, (1, 3, 1, 1))) / np.reshape(transfer.IMAGENET_STD, (1, 3, 1, 1))
    assert got.shape == (len(images), 3, IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)


def test_torch_and_keras_give_the_same_probabilities_on_raw_images(state_dict, ported, images):
    torch_net = transfer.torch_transfer_net(state_dict, N_CLASSES, IMAGE_SIZE, seed=7)
    keras_net = transfer.keras_transfer_net(ported, N_CLASSES, IMAGE_SIZE, seed=7)
    assert keras_net.input_shape == (None, 28, 28, 1)
    expected = torch_proba(torch_net, images)
    got = np.asarray(keras_net(images, training=False))
    assert got.shape == expected.shape == (len(images), N_CLASSES)
    np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-5)
    diff = np.abs(got - expected).max()
    assert diff < PROBA_TOLERANCE, f"max abs probability difference {diff}"
    # Not trivially equal: the images give different predictions.
    assert np.abs(expected - expected.mean(axis=0)).max() > 1e-3


def test_torch_frozen_backbone_stays_frozen(state_dict, images, labels):
    net = transfer.torch_transfer_net(state_dict, N_CLASSES, IMAGE_SIZE)
    head = {"top.classifier.weight", "top.classifier.bias"}
    assert {name for name, p in net.named_parameters() if p.requires_grad} == head
    before = torch_snapshot(net)
    torch_step(net, images, labels)
    assert changed(before, torch_snapshot(net)) == head  # every backbone tensor byte-equal


def test_torch_fine_tune_trains_top_blocks_and_keeps_batch_norm_in_inference_mode(state_dict, images, labels):
    net = transfer.torch_transfer_net(state_dict, N_CLASSES, IMAGE_SIZE, cut=FINE_TUNE_FROM)
    net.train()
    assert net.training and net.top.dropout.training
    assert not any(m.training for m in net.stem.modules())
    assert not any(m.training for m in net.top.blocks.modules())
    before = torch_snapshot(net)
    torch_step(net, images, labels)
    moved = changed(before, torch_snapshot(net))
    batch_norm = {f"{name}.{p}" for name, m in net.named_modules()
                  if isinstance(m, torch.nn.BatchNorm2d) for p in ("weight", "bias")}
    learnable = {name for name, _ in net.named_parameters()} - batch_norm
    expected = {name for name in learnable if (block(name) or 0) >= FINE_TUNE_FROM or "classifier." in name}
    assert {name for name, p in net.named_parameters() if p.requires_grad} == expected
    assert moved == expected  # every trainable tensor moved, nothing else (batch norm included)
    assert not [name for name in moved if is_running_stat(name)]
    assert {block(name) for name in moved} == {None, *range(FINE_TUNE_FROM, mb.N_BLOCKS)}


def test_keras_frozen_backbone_stays_frozen(ported, images, labels):
    model = transfer.keras_transfer_net(ported, N_CLASSES, IMAGE_SIZE)
    assert {v.path for v in model.trainable_weights} == {"head/kernel", "head/bias"}
    before = keras_snapshot(model)
    keras_step(model, images, labels)
    assert changed(before, keras_snapshot(model)) == {"head/kernel", "head/bias"}


def test_keras_fine_tune_trains_top_blocks_and_keeps_batch_norm_in_inference_mode(ported, images, labels):
    model = transfer.keras_transfer_net(ported, N_CLASSES, IMAGE_SIZE, cut=FINE_TUNE_FROM)
    trainable = {v.path for v in model.trainable_weights}
    assert trainable == {path for path in ported if (mb.block_of(path) or -1) >= FINE_TUNE_FROM
                         and path.endswith("/kernel")} | {"head/kernel", "head/bias"}
    before = keras_snapshot(model)
    keras_step(model, images, labels)
    moved = changed(before, keras_snapshot(model))
    assert moved == trainable
    assert not [path for path in moved if is_running_stat(path)]


def test_the_same_blocks_are_trainable_in_both_frameworks(state_dict, ported):
    torch_net = transfer.torch_transfer_net(state_dict, N_CLASSES, IMAGE_SIZE, cut=FINE_TUNE_FROM)
    keras_net = transfer.keras_transfer_net(ported, N_CLASSES, IMAGE_SIZE, cut=FINE_TUNE_FROM)
    torch_count = sum(p.numel() for p in torch_net.parameters() if p.requires_grad)
    keras_count = sum(int(np.prod(v.shape)) for v in keras_net.trainable_weights)
    assert torch_count == keras_count


@pytest.mark.slow  # ~14 s on 2 CPU cores: torch.export + the ONNX exporter
def test_torch_net_exports_to_onnx_taking_raw_images(state_dict, images, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from curriculum.frameworks.torch_backend import PredictionModel, export

    net = transfer.torch_transfer_net(state_dict, N_CLASSES, IMAGE_SIZE, seed=1)
    model = PredictionModel(net, torch.nn.Softmax(dim=1), ("proba",)).eval()
    paths = export(model, tmp_path, images)
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    assert [tuple(i.shape[1:]) for i in session.get_inputs()] == [(28, 28, 1)]
    (got,) = session.run(None, {"x": images})
    expected = torch_proba(net, images)
    diff = np.abs(got - expected).max()
    assert diff < PROBA_TOLERANCE, f"max abs ONNX probability difference {diff}"


def test_keras_training_false_alone_does_not_keep_batch_norm_in_inference_mode():
    """Why the Keras net freezes its batch-norm layers: Keras 3's functional model passes its own
    ``training`` flag to the nested base, overriding ``base(x, training=False)``. Should this test
    fail, Keras honours the recorded flag and trainable batch-norm scales could be allowed."""
    import keras
    from keras import layers

    def nested(bn_trainable: bool):
        inner_in = keras.Input((4,))
        bn = layers.BatchNormalization(name="bn")
        bn.trainable = bn_trainable
        base = keras.Model(inner_in, bn(layers.Dense(4, name="dense")(inner_in)))
        outer_in = keras.Input((4,))
        model = keras.Model(outer_in, layers.Dense(1)(base(outer_in, training=False)))
        model.compile(optimizer="sgd", loss="mse")
        return model, bn

    x, y = np.random.default_rng(0).normal(size=(16, 4)).astype("float32") + 3, np.zeros((16, 1), "float32")
    for bn_trainable, should_move in ((True, True), (False, False)):
        model, bn = nested(bn_trainable)
        before = bn.moving_mean.numpy().copy()
        model.train_on_batch(x, y)
        assert (not np.array_equal(before, bn.moving_mean.numpy())) == should_move, bn_trainable


@pytest.mark.parametrize("cut", [FINE_TUNE_FROM, transfer.FROZEN])
def test_stem_then_top_is_the_whole_network_and_the_cached_outputs_are_the_stems(state_dict, ported, images, cut):
    """What the project trains on (stem outputs computed once) and what it exports (the whole
    network) agree, in both frameworks; the Keras stem matches the torch stem."""
    trunk, features = transfer.torch_stem_outputs(state_dict, images, IMAGE_SIZE, cut, batch_size=3)
    stem = transfer.torch_stem(state_dict, IMAGE_SIZE, cut)
    with torch.no_grad():
        direct = stem(torch.from_numpy(images)).numpy()
        pooled = transfer.torch_stem(state_dict, IMAGE_SIZE, transfer.FROZEN)(torch.from_numpy(images)).numpy()
    assert direct.shape == (len(images), *transfer.stem_output_shape(IMAGE_SIZE, cut))
    np.testing.assert_allclose(trunk, direct, atol=1e-5)
    np.testing.assert_allclose(features, pooled, atol=1e-5)
    keras_stem = transfer.keras_stem(ported, IMAGE_SIZE, cut)
    np.testing.assert_allclose(np.asarray(keras_stem(images)), direct, atol=1e-4)
    assert not keras_stem.trainable_weights

    top = transfer.torch_top(state_dict, cut, N_CLASSES, seed=2)
    whole = transfer.torch_transfer_net(state_dict, N_CLASSES, IMAGE_SIZE, cut=cut, seed=2)
    with torch.no_grad():
        np.testing.assert_allclose(top(torch.from_numpy(trunk)).numpy(), whole(torch.from_numpy(images)).numpy(), atol=1e-4)
    keras_top = transfer.keras_top(ported, cut, trunk.shape[1:], N_CLASSES, seed=2)
    np.testing.assert_allclose(np.asarray(keras_top(trunk)), torch_proba(whole, images), atol=PROBA_TOLERANCE)


def test_project_builders_take_spec_train_and_weights(state_dict, ported):
    from types import SimpleNamespace

    from curriculum.projects.transfer_learning import nets

    train = SimpleNamespace(dropout=0.1)
    shape = transfer.stem_output_shape(32, 17)
    spec = {"input_shape": list(shape), "n_outputs": N_CLASSES, "cut": 17, "seed": 5, "image_size": 32}
    net = nets.torch_top(spec, train, {k: v.numpy() for k, v in state_dict.items()})
    assert net.dropout.p == 0.1
    assert {block(n) for n, p in net.named_parameters() if p.requires_grad} == {17, 18, None}
    model = nets.keras_top(spec, train, ported)
    assert model.input_shape == (None, *shape) and model.output_shape == (None, N_CLASSES)
    np.testing.assert_array_equal(model.get_layer("head").get_weights()[0], transfer.head_weights(N_CLASSES, 5)["kernel"])
    head = nets.keras_head({**spec, "input_shape": [transfer.FEATURES]}, train)
    assert {v.path for v in head.trainable_weights} == {"head/kernel", "head/bias"}
