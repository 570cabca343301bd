"""The CenterNet-style detector in Keras 3 (see :mod:`.centernet` for the architecture, targets and
loss): :func:`build_keras` (a functional model, uint8 images -> raw output, built only from stock
layers), :func:`keras_loss` and :func:`keras_box_metric` (for ``model.compile``, on the padded boxes,
encoded in the graph by :func:`.centernet.encode_targets`) and :func:`keras_decoder` (raw output -> boxes, scores,
labels; exports to ONNX through tf2onnx).

The loss, the metric and the decoding layer are registered Keras serializables (package
``curriculum.detection``): importing this module is what lets ``keras.models.load_model`` rebuild
a compiled model or a model with the decoder behind it.
"""
from __future__ import annotations

from typing import Any, Mapping

import keras
import numpy as np
from keras import layers, ops

from curriculum.backbones import mobilenet_v2 as mb
from curriculum.backbones.imagenet import IMAGENET_MEAN, IMAGENET_STD
from curriculum.projects.detection import centernet as cn

PACKAGE = "curriculum.detection"


def _conv_bn_relu(x, name: str, width: int):
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}.0")(x)
    x = layers.BatchNormalization(epsilon=cn.BN_EPSILON, momentum=cn.BN_MOMENTUM, name=f"{name}.1")(x)
    return layers.ReLU(name=f"{name}.2")(x)


def build_keras(spec: Mapping[str, Any], train: Any, weights: Mapping[str, Any]) -> keras.Model:
    """The detector on the ported MobileNetV2 ``weights`` (:func:`mb.port_weights`' dict, or the
    torch state dict, ported here): uint8 (B, S, S, 3) -> raw (B, S/4, S/4, C+4); everything
    trainable (batch norm in training mode under ``fit``); new layers from
    :func:`.centernet.initial_weights`, named as the torch modules."""
    image_size, n_classes, width = int(spec["image_size"]), int(spec["n_classes"]), int(train.width)
    cn.check_image_size(image_size)
    trunk = mb.keras_mobilenet_v2(weights, input_shape=(image_size, image_size, 3), include_top=False,
                                  blocks=(0, cn.N_BACKBONE_BLOCKS))
    backbone = keras.Model(trunk.input, [trunk.get_layer(f"features.{end - 1}.add").output for _, end in cn.LEVELS],
                           name="backbone")
    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    x = layers.Rescaling(scale=1.0 / (255.0 * std), offset=-mean / std, name="imagenet_normalise")(inputs)
    c4, c8, c16 = backbone(x)
    lateral = [layers.Conv2D(width, 1, use_bias=False, name=f"lateral.{k}") for k in range(len(cn.LEVELS))]
    p = lateral[2](c16)
    p = layers.Add(name="topdown.1")([lateral[1](c8), layers.UpSampling2D(2, name="upsample.1")(p)])
    p = _conv_bn_relu(p, "smooth.1", width)
    p = layers.Add(name="topdown.0")([lateral[0](c4), layers.UpSampling2D(2, name="upsample.0")(p)])
    p = _conv_bn_relu(p, "smooth.0", width)
    heads = []
    for head, channels in cn.head_channels(n_classes).items():
        heads.append(layers.Conv2D(channels, 1, name=f"{head}.3")(_conv_bn_relu(p, head, width)))
    outputs = layers.Concatenate(axis=-1, name="raw")(heads)
    model = keras.Model(inputs, outputs, name="centernet")
    for name, values in cn.initial_weights(spec, train).items():
        model.get_layer(name).set_weights([values["kernel"], *([values["bias"]] if "bias" in values else [])])
    return model


# --------------------------------------------------------------------------- loss

def loss_terms(y_true, y_pred, size_weight: float, offset_weight: float) -> dict[str, Any]:
    """The weighted loss components of raw outputs (B, H, W, C+4) against dense targets
    (B, H, W, C+5): the same formula as :func:`.centernet_torch.loss_terms`."""
    n_classes = y_pred.shape[-1] - cn.N_BOX_CHANNELS
    y_true = ops.cast(y_true, y_pred.dtype)
    heat, gt = y_pred[..., :n_classes], y_true[..., :n_classes]
    mask = y_true[..., -1:]
    n = ops.maximum(ops.sum(mask), 1.0)
    pos = ops.cast(ops.equal(gt, 1.0), y_pred.dtype)
    log_p, log_not_p = -ops.softplus(-heat), -ops.softplus(heat)
    p = ops.sigmoid(heat)
    focal = (pos * ops.square(1 - p) * log_p
             + (1 - pos) * ops.square(ops.square(1 - gt)) * ops.square(p) * log_not_p)
    box = ops.abs(y_pred[..., n_classes:] - y_true[..., n_classes:n_classes + cn.N_BOX_CHANNELS]) * mask
    return {"heatmap": -ops.sum(focal) / n,
            "box_size": size_weight * ops.sum(box[..., :2]) / (2 * n),
            "box_offset": offset_weight * ops.sum(box[..., 2:]) / (2 * n)}


def dense_targets(boxes, y_pred):
    """Padded boxes (B, M, 5), the targets both frameworks are given, as the dense targets of
    raw outputs shaped like ``y_pred``: :func:`.centernet.encode_targets` (NumPy, the very function
    the torch model calls), run inside the training graph."""
    import tensorflow as tf

    grid, n_classes = y_pred.shape[1], y_pred.shape[-1] - cn.N_BOX_CHANNELS
    dense = tf.numpy_function(lambda b: cn.encode_targets(b, grid * cn.STRIDE, n_classes),
                              [ops.cast(boxes, "float32")], "float32", stateful=False)
    dense.set_shape((None, grid, grid, n_classes + cn.N_TARGET_EXTRA))
    return dense


@keras.saving.register_keras_serializable(package=PACKAGE)
class CenterNetLoss(keras.losses.Loss):
    """Focal heatmap loss + weighted L1 size and offset (one scalar per batch)."""

    def __init__(self, size_weight: float = 0.1, offset_weight: float = 1.0, name: str = "centernet_loss",
                 reduction: str = "sum_over_batch_size", dtype: Any = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.size_weight, self.offset_weight = float(size_weight), float(offset_weight)

    def call(self, y_true, y_pred):  # y_true: padded boxes
        terms = loss_terms(dense_targets(y_true, y_pred), y_pred, self.size_weight, self.offset_weight)
        return terms["heatmap"] + terms["box_size"] + terms["box_offset"]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size_weight": self.size_weight, "offset_weight": self.offset_weight}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BoxLoss(keras.metrics.Mean):
    """The box-regression part of the loss (weighted size + offset L1), averaged over batches."""

    def __init__(self, size_weight: float = 0.1, offset_weight: float = 1.0, name: str = "box_loss", dtype: Any = None):
        super().__init__(name=name, dtype=dtype)
        self.size_weight, self.offset_weight = float(size_weight), float(offset_weight)

    def update_state(self, y_true, y_pred, sample_weight=None):  # y_true: padded boxes
        terms = loss_terms(dense_targets(y_true, y_pred), y_pred, self.size_weight, self.offset_weight)
        return super().update_state(terms["box_size"] + terms["box_offset"])

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "size_weight": self.size_weight,
                "offset_weight": self.offset_weight}


def keras_loss(train: Any) -> CenterNetLoss:
    return CenterNetLoss(train.size_weight, train.offset_weight)


def keras_box_metric(train: Any) -> BoxLoss:
    return BoxLoss(train.size_weight, train.offset_weight)


# --------------------------------------------------------------------------- decoding

@keras.saving.register_keras_serializable(package=PACKAGE)
class CenterNetDecode(keras.layers.Layer):
    """Raw output (B, S/4, S/4, C+4) -> [boxes (B, K, 4) float32, scores (B, K) float32, labels
    (B, K) int64], as :class:`.centernet_torch.CenterNetDecoder`."""

    def __init__(self, image_size: int, n_classes: int, max_detections: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.image_size, self.n_classes, self.max_detections = int(image_size), int(n_classes), int(max_detections)

    def call(self, raw):
        c, side = self.n_classes, cn.output_size(self.image_size)
        candidates, k_max = cn.decoded_size(self.image_size, c, self.max_detections)
        k = min(k_max, candidates)
        heat = ops.sigmoid(raw[..., :c])
        pooled = ops.max_pool(heat, 3, strides=1, padding="same")
        peaks = heat * ops.cast(ops.equal(pooled, heat), heat.dtype)
        scores, index = ops.top_k(ops.reshape(peaks, (-1, candidates)), k)  # index = cell * C + label
        index = ops.cast(index, "int32")
        labels, cell = index % c, index // c
        box = ops.reshape(raw[..., c:], (-1, side * side, cn.N_BOX_CHANNELS))
        box = ops.take_along_axis(box, ops.repeat(ops.expand_dims(cell, -1), cn.N_BOX_CHANNELS, axis=-1), axis=1)
        size = ops.maximum(box[..., :2], 0.0) * (cn.STRIDE / 2)
        cx = (ops.cast(cell % side, box.dtype) + box[..., 2]) * cn.STRIDE
        cy = (ops.cast(cell // side, box.dtype) + box[..., 3]) * cn.STRIDE
        boxes = ops.stack([cx - size[..., 0], cy - size[..., 1], cx + size[..., 0], cy + size[..., 1]], axis=-1)
        boxes = ops.clip(boxes, 0.0, float(self.image_size))
        valid = scores > 0
        boxes = boxes * ops.cast(ops.expand_dims(valid, -1), boxes.dtype)
        labels = ops.cast(ops.where(valid, labels, -1), "int64")
        if k < k_max:
            pad = k_max - k
            boxes = ops.pad(boxes, ((0, 0), (0, pad), (0, 0)))
            scores = ops.pad(scores, ((0, 0), (0, pad)))
            labels = ops.pad(labels, ((0, 0), (0, pad)), constant_values=-1)
        return [boxes, scores, labels]

    def compute_output_spec(self, raw):
        batch, k = raw.shape[0], self.max_detections
        return [keras.KerasTensor((batch, k, 4), dtype="float32"), keras.KerasTensor((batch, k), dtype="float32"),
                keras.KerasTensor((batch, k), dtype="int64")]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "image_size": self.image_size, "n_classes": self.n_classes,
                "max_detections": self.max_detections}


def keras_decoder(spec: Mapping[str, Any], train: Any) -> keras.Model:
    """A functional model: raw output (B, S/4, S/4, C+4) -> [boxes, scores, labels]."""
    side = cn.output_size(int(spec["image_size"]))
    raw = keras.Input(shape=(side, side, int(spec["n_classes"]) + cn.N_BOX_CHANNELS), name="raw")
    outputs = CenterNetDecode(spec["image_size"], spec["n_classes"], train.max_detections, name="decode")(raw)
    return keras.Model(raw, outputs, name="centernet_decoder")
