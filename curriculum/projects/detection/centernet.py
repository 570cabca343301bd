"""The one-stage CenterNet-style detector, the framework-free part: constants, the target encoder
shared by PyTorch and Keras, and the seeded starting weights of the layers the backbone lacks.

Architecture (:mod:`.centernet_torch`, :mod:`.centernet_keras`; the same layers, names and
starting weights in both)::

    uint8 NHWC images (B, S, S, 3) -> /255, ImageNet mean/std
      -> MobileNetV2 features[:4]  c4  (24 ch, stride 4)     (ImageNet weights, all trainable,
      -> features[4:7]             c8  (32 ch, stride 8)      batch norm included)
      -> features[7:14]            c16 (96 ch, stride 16)
    lateral.i: 1x1 conv (no bias) of c4 / c8 / c16 to ``train.width`` channels
    p16 = lateral.2(c16)
    p8  = smooth.1(lateral.1(c8) + up2(p16))        smooth.*: 3x3 conv - BN - ReLU
    p4  = smooth.0(lateral.0(c4) + up2(p8))         up2: nearest-neighbour 2x upsampling
    heads on p4 (3x3 conv - BN - ReLU - 1x1 conv): heatmap (C logits, bias -2.19),
    size (w, h in stride-4 cells), offset (sub-cell centre offset)
    raw output: C + 4 channels in that order, (B, C+4, S/4, S/4) in torch, (B, S/4, S/4, C+4) in Keras

Targets (:func:`encode_targets`, NHWC, one array for both frameworks)::

    (B, S/4, S/4, C + 5): heatmap C | size w, h (stride-4 cells) | offset x, y | centre mask

A box's centre cell is ``floor(centre / 4)``; its heatmap channel holds a Gaussian
``exp(-((x - i)^2 + (y - j)^2) / (2 sigma^2))`` around that cell, exactly 1 at it, within CenterNet's
radius for a minimum overlap of 0.7 (sigma = (2r + 1) / 6); overlapping Gaussians of a class take
their maximum. Two boxes whose centres fall in the same cell share one regression target: the
later box in the padded list wins.

Loss (the same formula in :func:`.centernet_torch.loss_terms` and :func:`.centernet_keras.loss_terms`),
with N = max(1, number of centre cells in the batch)::

    heatmap    = -(1/N) * sum[ pos: (1-p)^2 log p ; other cells: (1-y)^4 p^2 log(1-p) ]  (alpha 2, beta 4)
    box_size   = size_weight   * (1/N) * sum over centres of mean_(w,h) |pred - target|
    box_offset = offset_weight * (1/N) * sum over centres of mean_(x,y) |pred - target|

(the L1 terms average their two coordinates, as CenterNet's ``RegL1Loss`` does). ``p`` is the
sigmoid of the heatmap logits; ``log p`` and ``log(1 - p)`` are computed as ``-softplus(-z)`` and
``-softplus(z)``, so neither overflows.

Decoding (the prediction head behind the raw output, one per framework): sigmoid heatmap, 3x3
max-pool peak suppression, top-K over classes x cells, boxes ``(cell + offset) * 4 -+ size * 4 / 2``
(size clamped at 0) clipped to the image; rows with score 0 are padding (box 0, label -1).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from curriculum.backbones import mobilenet_v2 as mb

STRIDE = 4  # the output map's stride
# MobileNetV2 feature blocks behind each pyramid level (start, end), their channels and strides
LEVELS = ((0, 4), (4, 7), (7, 14))
LEVEL_CHANNELS = (24, 32, 96)
LEVEL_STRIDES = (4, 8, 16)
N_BACKBONE_BLOCKS = LEVELS[-1][1]
HEATMAP_BIAS = -2.19  # sigmoid(-2.19) = 0.1: the usual prior for a rare positive
MIN_OVERLAP = 0.7
FOCAL_ALPHA, FOCAL_BETA = 2.0, 4.0
BN_EPSILON, BN_MOMENTUM = mb.BN_EPSILON, mb.BN_MOMENTUM  # torch's eps 1e-5, momentum 0.1 (Keras 0.9)
HEADS = ("heatmap", "size", "offset")
N_BOX_CHANNELS = 4  # size w, h + offset x, y
N_TARGET_EXTRA = 5  # size 2, offset 2, centre mask 1


def check_image_size(image_size: int) -> None:
    if image_size <= 0 or image_size % LEVEL_STRIDES[-1]:
        raise ValueError(f"the image size must be a positive multiple of {LEVEL_STRIDES[-1]}, got {image_size}")


def output_size(image_size: int) -> int:
    """Side of the stride-4 output map for ``image_size`` inputs (100 for 400)."""
    check_image_size(image_size)
    return image_size // STRIDE


def head_channels(n_classes: int) -> dict[str, int]:
    return {"heatmap": int(n_classes), "size": 2, "offset": 2}


# --------------------------------------------------------------------------- targets

def gaussian_radius(height: float, width: float, min_overlap: float = MIN_OVERLAP) -> float:
    """CenterNet's radius (``gaussian_radius`` of its reference code, three quadratic cases): how far
    a corner may move while a box of this size keeps IoU >= ``min_overlap`` with the truth."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def encode_targets(boxes: np.ndarray, image_size: int, n_classes: int) -> np.ndarray:
    """Padded boxes ``(B, M, 5)`` (x_min, y_min, x_max, y_max in input pixels, label; padding rows
    have label -1) -> dense NHWC targets ``(B, S/4, S/4, C + 5)`` float32: heatmap C, size w/h
    (stride-4 cells), offset x/y (centre / 4 minus its cell), centre mask. Boxes with a negative
    label or no positive width and height are skipped; centres outside the image are clipped in."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 3 or boxes.shape[2] != 5:
        raise ValueError(f"expected padded boxes of shape (B, M, 5), got {boxes.shape}")
    side = output_size(image_size)
    out = np.zeros((boxes.shape[0], side, side, n_classes + N_TARGET_EXTRA), np.float32)
    grid = np.arange(side, dtype=np.float64)
    for b, image_boxes in enumerate(boxes):
        heat = out[b, :, :, :n_classes]
        for x0, y0, x1, y1, label in image_boxes:
            if label < 0:
                continue
            label = int(label)
            if label >= n_classes:
                raise ValueError(f"box label {label} is not below n_classes {n_classes}")
            w, h = (x1 - x0) / STRIDE, (y1 - y0) / STRIDE
            if not (w > 0 and h > 0):
                continue
            cx, cy = (x0 + x1) / (2 * STRIDE), (y0 + y1) / (2 * STRIDE)
            i = min(max(int(math.floor(cy)), 0), side - 1)
            j = min(max(int(math.floor(cx)), 0), side - 1)
            radius = max(0, int(gaussian_radius(math.ceil(h), math.ceil(w))))
            sigma = (2 * radius + 1) / 6
            top, bottom = max(0, i - radius), min(side, i + radius + 1)
            left, right = max(0, j - radius), min(side, j + radius + 1)
            gy = np.exp(-((grid[top:bottom] - i) ** 2) / (2 * sigma ** 2))
            gx = np.exp(-((grid[left:right] - j) ** 2) / (2 * sigma ** 2))
            window = heat[top:bottom, left:right, label]
            np.maximum(window, (gy[:, None] * gx[None, :]).astype(np.float32), out=window)
            heat[i, j, label] = 1.0
            out[b, i, j, n_classes:] = (w, h, cx - j, cy - i, 1.0)
    return out


# --------------------------------------------------------------------------- starting weights

def _glorot(rng: np.random.Generator, kernel: int, c_in: int, c_out: int) -> np.ndarray:
    """Keras' default Glorot-uniform conv kernel, Keras layout ``(k, k, c_in, c_out)`` (for a 1x1
    kernel the same draw as :func:`curriculum.backbones.transfer.head_weights`' dense kernel)."""
    fan_in, fan_out = kernel * kernel * c_in, kernel * kernel * c_out
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(kernel, kernel, c_in, c_out)).astype(np.float32)


def new_layers(spec: Mapping[str, Any], train: Any) -> list[tuple[str, int, int, int, bool]]:
    """The convolutions the backbone lacks, in drawing order: (name, kernel, c_in, c_out, bias).
    Names are the torch module paths (``heatmap.3``), which are also the Keras layer names; each
    3x3 conv is followed by batch norm ``<prefix>.1`` and ReLU ``<prefix>.2``."""
    width = int(train.width)
    layers = [(f"lateral.{k}", 1, c, width, False) for k, c in enumerate(LEVEL_CHANNELS)]
    layers += [(f"smooth.{k}.0", 3, width, width, False) for k in (1, 0)]
    for head, channels in head_channels(spec["n_classes"]).items():
        layers += [(f"{head}.0", 3, width, width, False), (f"{head}.3", 1, width, channels, True)]
    return layers


def initial_weights(spec: Mapping[str, Any], train: Any) -> dict[str, dict[str, np.ndarray]]:
    """Starting weights of the new convolutions, equal in both frameworks: ``{layer: {"kernel":
    (k, k, c_in, c_out) Keras layout[, "bias"]}}``, Glorot-uniform kernels drawn in
    :func:`new_layers`' order from one generator seeded with ``spec["seed"]``; biases 0 except
    the heatmap's (:data:`HEATMAP_BIAS`). Batch norm starts at both frameworks' defaults
    (gamma 1, beta 0, mean 0, variance 1)."""
    rng = np.random.default_rng(int(spec["seed"]))
    weights: dict[str, dict[str, np.ndarray]] = {}
    for name, kernel, c_in, c_out, bias in new_layers(spec, train):
        weights[name] = {"kernel": _glorot(rng, kernel, c_in, c_out)}
        if bias:
            fill = HEATMAP_BIAS if name.startswith("heatmap.") else 0.0
            weights[name]["bias"] = np.full(c_out, fill, np.float32)
    return weights


def torch_kernel(kernel: np.ndarray) -> np.ndarray:
    """Keras ``(kh, kw, in, out)`` -> torch ``(out, in, kh, kw)``."""
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def decoded_size(image_size: int, n_classes: int, max_detections: int) -> tuple[int, int]:
    """(candidates, K): how many (class, cell) scores top-K chooses from, and K."""
    side = output_size(image_size)
    return side * side * int(n_classes), int(max_detections)
