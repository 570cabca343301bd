"""The CenterNet-style detector: the NumPy target encoder, torch and Keras computing the same raw
output and the same loss from the same starting weights, decoding (a hand-made heatmap, a perfect
raw output) in both frameworks, and the exports (ONNX with a dynamic batch, the .keras archive)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from curriculum.projects.detection import centernet as cn

torch = pytest.importorskip("torch")

IMAGE_SIZE = 64  # tiny, to keep the suite fast; the project uses 400
N_CLASSES = 2
SIDE = IMAGE_SIZE // cn.STRIDE
SPEC = {"image_size": IMAGE_SIZE, "n_classes": N_CLASSES, "seed": 3}
TRAIN = SimpleNamespace(width=64, max_detections=20, size_weight=0.1, offset_weight=1.0)
RAW_TOLERANCE = 1e-3  # measured: 5e-6 on logits up to ~4
LOSS_TOLERANCE = 1e-4  # relative
BOXES = np.array([  # (2, 3, 5) padded boxes: x_min, y_min, x_max, y_max, label; padding -1
    [[10, 12, 30, 40, 0], [40, 5, 60, 20, 1], [-1, -1, -1, -1, -1]],
    [[3, 3, 20, 21, 1], [-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]],
], np.float32)


@pytest.fixture(scope="session")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def ct():
    from curriculum.projects.detection import centernet_torch

    return centernet_torch


@pytest.fixture(scope="session")
def ck():  # TensorFlow's thread pools stay as the session made them (they cannot change once started)
    from curriculum.projects.detection import centernet_keras

    return centernet_keras


@pytest.fixture(scope="session")
def torch_net(ct, state_dict):
    return ct.build_torch(SPEC, TRAIN, state_dict)


@pytest.fixture(scope="session")
def keras_net(ck, ported):
    return ck.build_keras(SPEC, TRAIN, ported)


def torch_terms(net, x, boxes, train_mode=False):
    net.train(train_mode)
    with torch.no_grad():
        terms = net(torch.from_numpy(x), torch.from_numpy(boxes))
    net.eval()
    return {name: value.item() for name, value in terms.items()}


def perfect_raw(boxes: np.ndarray) -> np.ndarray:
    """NHWC raw output that a perfect model would give: heatmap logits of the targets, their size
    and offset (0 away from the centres)."""
    dense = cn.encode_targets(boxes, IMAGE_SIZE, N_CLASSES)
    heat = np.clip(dense[..., :N_CLASSES], 1e-4, 1 - 1e-4)
    return np.concatenate([np.log(heat / (1 - heat)), dense[..., N_CLASSES:N_CLASSES + 4]], axis=-1).astype(np.float32)


def real_boxes(boxes: np.ndarray, image: int) -> tuple[np.ndarray, np.ndarray]:
    rows = boxes[image][boxes[image][:, 4] >= 0]
    return rows[:, :4], rows[:, 4].astype(np.int64)


# --------------------------------------------------------------------------- targets

def test_encoder_puts_one_gaussian_peak_with_size_offset_and_mask_at_the_centre_cell():
    boxes = np.array([[[10, 12, 30, 40, 0], [-1, -1, -1, -1, -1]]], np.float32)
    dense = cn.encode_targets(boxes, IMAGE_SIZE, N_CLASSES)
    assert dense.shape == (1, SIDE, SIDE, N_CLASSES + 5) and dense.dtype == np.float32
    # centre (20, 26) px = (5, 6.5) cells: cell row 6, column 5, offset (0, 0.5); size 20x28 px = 5x7 cells
    heat, size, offset, mask = dense[0, ..., 0], dense[0, ..., 2:4], dense[0, ..., 4:6], dense[0, ..., 6]
    assert heat[6, 5] == 1.0 and np.argmax(heat) == 6 * SIDE + 5 and (heat == 1.0).sum() == 1
    assert np.all(dense[0, ..., 1] == 0)  # no box of class 1
    np.testing.assert_allclose(size[6, 5], [5.0, 7.0])
    np.testing.assert_allclose(offset[6, 5], [0.0, 0.5])
    assert mask[6, 5] == 1.0 and mask.sum() == 1.0
    assert np.all(size[mask == 0] == 0) and np.all(offset[mask == 0] == 0)
    radius = int(cn.gaussian_radius(7, 5))
    sigma = (2 * radius + 1) / 6
    assert radius >= 1
    np.testing.assert_allclose(heat[6, 5 + radius], math.exp(-radius ** 2 / (2 * sigma ** 2)), rtol=1e-6)
    np.testing.assert_allclose(heat[6 + 1, 5 + 1], math.exp(-2 / (2 * sigma ** 2)), rtol=1e-6)
    assert heat[6, 5 + radius + 1] == 0 and heat[6 - radius - 1, 5] == 0  # nothing beyond the radius
    row = heat[6, 5 - radius:5 + radius + 1]
    np.testing.assert_array_equal(row, row[::-1])  # symmetric about the centre cell


def test_encoder_takes_the_maximum_of_overlapping_gaussians_and_skips_padding():
    boxes = np.array([[[8, 8, 24, 24, 1], [12, 8, 28, 24, 1], [-1, -1, -1, -1, -1]]], np.float32)
    both = cn.encode_targets(boxes, IMAGE_SIZE, N_CLASSES)[0, ..., 1]
    first = cn.encode_targets(boxes[:, :1], IMAGE_SIZE, N_CLASSES)[0, ..., 1]
    second = cn.encode_targets(boxes[:, 1:2], IMAGE_SIZE, N_CLASSES)[0, ..., 1]
    np.testing.assert_array_equal(both, np.maximum(first, second))
    assert cn.encode_targets(np.full((2, 4, 5), -1, np.float32), IMAGE_SIZE, N_CLASSES).sum() == 0


# --------------------------------------------------------------------------- the two frameworks agree

def test_torch_and_keras_start_equal_raw_output_and_loss(torch_net, keras_net, ck, images):
    torch_net.eval()
    with torch.no_grad():
        torch_raw = torch_net(torch.from_numpy(images)).numpy()
    assert torch_raw.shape == (2, N_CLASSES + 4, SIDE, SIDE)
    keras_raw = np.asarray(keras_net(images, training=False))
    assert keras_raw.shape == (2, SIDE, SIDE, N_CLASSES + 4)
    np.testing.assert_allclose(torch_raw.transpose(0, 2, 3, 1), keras_raw, atol=RAW_TOLERANCE)
    np.testing.assert_allclose(keras_raw[..., :N_CLASSES].mean(), cn.HEATMAP_BIAS, atol=1.0)

    dense = cn.encode_targets(BOXES, IMAGE_SIZE, N_CLASSES)
    torch_loss = torch_terms(torch_net, images, BOXES)
    keras_loss = {name: float(value) for name, value in ck.loss_terms(dense, keras_raw, 0.1, 1.0).items()}
    assert set(torch_loss) == {"heatmap", "box_size", "box_offset"}
    for name in torch_loss:
        np.testing.assert_allclose(torch_loss[name], keras_loss[name], rtol=LOSS_TOLERANCE)
    assert all(value > 0 for value in torch_loss.values())

    # in training mode (batch norm on batch statistics) too; on copies, as that moves the running
    # statistics (torch's running variance is the unbiased one, Keras' the biased: they drift apart
    # by a factor n / (n - 1), n = batch x cells of the coarsest map: 2500 at 400 px, batch 4)
    import copy

    import keras

    keras_copy = keras.models.clone_model(keras_net)
    keras_copy.set_weights(keras_net.get_weights())
    torch_train = torch_terms(copy.deepcopy(torch_net), images, BOXES, train_mode=True)
    keras_train = ck.loss_terms(dense, keras_copy(images, training=True), 0.1, 1.0)
    for name in torch_train:
        np.testing.assert_allclose(torch_train[name], float(keras_train[name]), rtol=1e-3)


def test_keras_compiled_loss_and_box_metric_are_the_torch_sums(torch_net, keras_net, ck, images):
    import keras

    model = keras.models.clone_model(keras_net)
    model.set_weights(keras_net.get_weights())
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=ck.keras_loss(TRAIN),
                  metrics=[ck.keras_box_metric(TRAIN)])
    logs = model.evaluate(images, BOXES, batch_size=2, verbose=0, return_dict=True)  # the padded boxes, as torch
    terms = torch_terms(torch_net, images, BOXES)
    np.testing.assert_allclose(logs["loss"], sum(terms.values()), rtol=LOSS_TOLERANCE)
    np.testing.assert_allclose(logs["box_loss"], terms["box_size"] + terms["box_offset"], rtol=LOSS_TOLERANCE)
    # every layer trains, batch norm statistics included
    before = [v.numpy().copy() for v in model.non_trainable_weights]
    model.train_on_batch(images, BOXES)
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.non_trainable_weights))
    assert len(model.trainable_weights) == len([p for p in torch_net.parameters()])


def test_torch_training_step_moves_every_parameter(ct, state_dict, images):
    net = ct.build_torch(SPEC, TRAIN, state_dict)
    assert net.takes_targets is True
    before = {name: t.detach().clone() for name, t in net.state_dict().items()}
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = sum(net(torch.from_numpy(images), torch.from_numpy(BOXES)).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = net.state_dict()
    assert all(not torch.equal(before[name], after[name]) for name in before
               if not name.endswith("num_batches_tracked"))
    net.eval()  # no batch-norm statistic updates in eval mode, even with targets
    frozen = {name: t.detach().clone() for name, t in net.state_dict().items()}
    torch_terms(net, images, BOXES)
    assert all(torch.equal(frozen[name], t) for name, t in net.state_dict().items())


# --------------------------------------------------------------------------- decoding

def decode_both(ct, ck, raw_nhwc: np.ndarray):
    decoder = ct.torch_decoder(SPEC, TRAIN)
    with torch.no_grad():
        torch_out = [t.numpy() for t in decoder(torch.from_numpy(raw_nhwc.transpose(0, 3, 1, 2).copy()))]
    keras_out = [np.asarray(t) for t in ck.keras_decoder(SPEC, TRAIN)(raw_nhwc)]
    return torch_out, keras_out


def test_decoding_a_hand_made_heatmap_gives_the_expected_box(ct, ck):
    raw = np.zeros((1, SIDE, SIDE, N_CLASSES + 4), np.float32)
    raw[..., :N_CLASSES] = -20.0
    raw[0, 6, 5, 1] = 2.0  # a peak of class 1 at row 6, column 5
    raw[0, 6, 6, 1] = 1.0  # its neighbour: suppressed by the 3x3 max-pool
    raw[0, 6, 5, 2:] = [5.0, 7.0, 0.25, 0.5]  # size 5x7 cells, offset (0.25, 0.5)
    raw[0, 1, 1, 0] = 0.0  # a corner box of class 0 sticking out of the image: clipped
    raw[0, 1, 1, 2:] = [4.0, 4.0, 0.0, 0.0]
    for boxes, scores, labels in decode_both(ct, ck, raw):
        assert boxes.shape == (1, TRAIN.max_detections, 4) and boxes.dtype == np.float32
        assert scores.shape == labels.shape == (1, TRAIN.max_detections) and labels.dtype == np.int64
        centre = np.array([(5 + 0.25) * 4, (6 + 0.5) * 4])
        np.testing.assert_allclose(boxes[0, 0], [*(centre - [10, 14]), *(centre + [10, 14])], atol=1e-4)
        np.testing.assert_allclose(scores[0, :2], [1 / (1 + math.exp(-2)), 0.5], rtol=1e-6)
        assert labels[0, :2].tolist() == [1, 0]
        np.testing.assert_allclose(boxes[0, 1], [0, 0, 12, 12], atol=1e-4)
        assert np.all(np.diff(scores[0]) <= 0)
        assert scores[0, 2] < 1e-6  # the suppressed neighbour is not a detection; others near 0


def test_a_perfect_raw_output_decodes_back_to_the_boxes(ct, ck):
    raw = perfect_raw(BOXES)
    for boxes, scores, labels in decode_both(ct, ck, raw):
        for image in range(len(BOXES)):
            truth, truth_labels = real_boxes(BOXES, image)
            n = len(truth)
            assert np.all(scores[image, :n] > 0.99) and np.all(scores[image, n:] < 0.01)
            order = np.lexsort((boxes[image, :n, 0], labels[image, :n]))
            expected = np.lexsort((truth[:, 0], truth_labels))
            np.testing.assert_allclose(boxes[image, :n][order], truth[expected], atol=1e-4)
            np.testing.assert_array_equal(labels[image, :n][order], truth_labels[expected])


def test_fewer_candidates_than_k_are_padded(ct, ck):
    train = SimpleNamespace(**{**vars(TRAIN), "max_detections": SIDE * SIDE * N_CLASSES + 5})
    raw = perfect_raw(BOXES[:1])
    decoder = ct.torch_decoder(SPEC, train)
    with torch.no_grad():
        outs = [[t.numpy() for t in decoder(torch.from_numpy(raw.transpose(0, 3, 1, 2).copy()))],
                [np.asarray(t) for t in ck.keras_decoder(SPEC, train)(raw)]]
    for boxes, scores, labels in outs:
        assert boxes.shape == (1, train.max_detections, 4)
        assert np.all(scores[0, -5:] == 0) and np.all(labels[0, -5:] == -1) and np.all(boxes[0, -5:] == 0)


# --------------------------------------------------------------------------- exports

def test_torch_model_and_decoder_export_to_onnx_with_a_dynamic_batch(ct, torch_net, images, tmp_path):
    import warnings

    import onnxruntime as ort
    from torch import nn

    class Predictor(nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.head = torch_net, ct.torch_decoder(SPEC, TRAIN)

        def forward(self, x):
            return self.head(self.model(x))

    predictor = Predictor().eval()
    path = tmp_path / "centernet.onnx"
    names = ["boxes", "scores", "labels"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(predictor, (torch.from_numpy(images),), path, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=names, dynamic_axes={n: {0: "batch"} for n in ["x", *names]})
    batch = np.concatenate([images, images[:1]])
    with torch.no_grad():
        expected = [t.numpy() for t in predictor(torch.from_numpy(batch))]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(names, {"x": batch})
    np.testing.assert_allclose(got[0], expected[0], atol=1e-3)
    np.testing.assert_allclose(got[1], expected[1], atol=1e-5)
    assert got[2].dtype == np.int64
    top = expected[1] > 0.2  # labels of clear detections (ties among near-zero scores may reorder)
    np.testing.assert_array_equal(got[2][top], expected[2][top])


@pytest.mark.slow  # the smoke pipeline's export stage runs this export and its parity check by default
def test_keras_model_saves_reloads_and_exports_to_onnx_with_the_decoder(ck, keras_net, images, tmp_path):
    import warnings

    import keras
    import onnxruntime as ort

    x = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype="uint8", name="image")
    predictor = keras.Model(x, ck.keras_decoder(SPEC, TRAIN)(keras_net(x)), name="centernet_predictor")
    layer_types = {type(layer).__name__ for layer in keras_net.layers}
    assert "Lambda" not in layer_types
    expected = [np.asarray(t) for t in predictor(images)]
    predictor.save(tmp_path / "predictor.keras")
    reloaded = keras.models.load_model(tmp_path / "predictor.keras")
    for got, want in zip([np.asarray(t) for t in reloaded(images)], expected):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # the compiled training model round-trips too (the loss and metric are registered)
    model = keras.models.clone_model(keras_net)
    model.compile(optimizer="adam", loss=ck.keras_loss(TRAIN), metrics=[ck.keras_box_metric(TRAIN)])
    model.save(tmp_path / "model.keras")
    with warnings.catch_warnings():  # an optimizer never stepped holds nothing to load
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.loss, ck.CenterNetLoss) and loaded.loss.size_weight == TRAIN.size_weight

    predictor.export(tmp_path / "predictor.onnx", format="onnx", verbose=False)
    session = ort.InferenceSession(str(tmp_path / "predictor.onnx"), providers=["CPUExecutionProvider"])
    batch = np.concatenate([images, images[:1]])
    want = [np.asarray(t) for t in predictor(batch)]
    got = session.run(None, {session.get_inputs()[0].name: batch})
    np.testing.assert_allclose(got[0], want[0], atol=1e-3)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)
    assert got[2].dtype == np.int64
