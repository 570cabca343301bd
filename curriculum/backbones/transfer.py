"""Transfer learning on the ImageNet MobileNetV2, cut in two: a frozen stem and a trainable top.

The same two parts exist in PyTorch and in Keras, with the same weights (the torch state dict,
or :func:`curriculum.backbones.mobilenet_v2.port_weights`' dict for Keras), the same layer names
(``features.14.conv.1.0``) and the same NHWC layout between them::

    stem(cut):  float32 NHWC images in [0, 1] at the data's own size (Fashion-MNIST: 28x28x1)
                -> resize to image_size (bilinear, half-pixel centres, no antialiasing)
                -> grey to RGB (the channel repeated) -> ImageNet normalisation
                -> feature blocks 0..cut-1 -> NHWC activations
                   (cut = 19, every block: global-average-pooled 1280 features)
    top(cut):   those activations -> feature blocks cut..18 -> pool -> dropout -> dense

``top(stem(x))`` is the whole transfer network (:func:`torch_transfer_net`,
:func:`keras_transfer_net`). Cut at 19, the top is just the new head: that is feature extraction
("freeze the base, add a head"); cut lower, the top's blocks are fine-tuned. Because nothing in
the stem ever trains, its output can be computed once per image and cached -- the project does
that in preprocess -- and export puts the stem back in front, so the exported model takes raw
images.

Keras' ``layers.Resizing(interpolation="bilinear")`` and torch's
``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` compute the same
samples. The torch top returns logits (the task's head applies softmax); the Keras top ends in a
softmax, as the curriculum's models do.

Batch norm stays in inference mode in every block of both parts -- its running statistics never
move, and it normalises with them, not with the batch's -- and its scale and shift are frozen
too. That is the documented Keras pitfall, and the usual advice (Keras' transfer-learning guide:
call the base with ``training=False`` and keep batch norm frozen). In Keras 3 the call alone is
not enough: a functional model passes its *own* ``training`` flag to every layer it runs
(``keras.src.models.functional.operation_fn``), overriding the ``training=False`` recorded for
the nested base, so ``fit`` would update the running statistics of any trainable batch-norm
layer. A ``BatchNormalization`` with ``trainable=False``, however, always runs in inference mode,
so the Keras top freezes every batch-norm layer (and still calls its blocks with
``training=False``). The torch parts match: their blocks stay in eval mode under ``.train()``,
and batch-norm parameters never require gradients -- the same tensors train in both frameworks.

The heads of the two frameworks start equal: both draw Keras' Glorot-uniform kernel and zero
bias from one seeded NumPy generator (:func:`head_weights`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from curriculum.backbones import mobilenet_v2 as mb
from curriculum.backbones.imagenet import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import keras
    import torch

FEATURES = mb.LAST_CHANNELS  # 1280 pooled features
INPUT_SHAPE = (28, 28, 1)
FROZEN = mb.N_BLOCKS  # cut after the last block: the whole backbone is the stem


def head_weights(n_classes: int, seed: int, n_features: int = FEATURES) -> dict[str, np.ndarray]:
    """The new head's starting weights, the same for both frameworks: Glorot-uniform kernel
    ``(n_features, n_classes)`` (Keras' layout; torch's Linear takes its transpose), zero bias."""
    limit = np.sqrt(6.0 / (n_features + n_classes))
    rng = np.random.default_rng(seed)
    kernel = rng.uniform(-limit, limit, size=(n_features, n_classes)).astype(np.float32)
    return {"kernel": kernel, "bias": np.zeros(n_classes, np.float32)}


def check_cut(cut: int) -> None:
    if not 1 <= cut <= FROZEN:
        raise ValueError(f"the cut between stem and top must be a block 1..{FROZEN} ({FROZEN}: the whole "
                         f"backbone frozen), got {cut}")


def _check_image_shape(input_shape: tuple) -> None:
    if len(input_shape) != 3 or input_shape[2] not in (1, 3):
        raise ValueError(f"expected an (height, width, 1 or 3) image shape, got {tuple(input_shape)}")


def stem_output_shape(image_size: int, cut: int) -> tuple[int, ...]:
    """The NHWC shape (batch left out) of ``stem(cut)``'s output for ``image_size`` images."""
    check_cut(cut)
    if cut == FROZEN:
        return (FEATURES,)
    size, channels = image_size, mb.STEM_CHANNELS
    size = (size + 1) // 2  # the stem convolution, stride 2, padding 1
    for _, _, c_out, stride in mb._blocks()[: cut - 1]:
        size, channels = (size + 1) // 2 if stride == 2 else size, c_out
    return (size, size, channels)


# --------------------------------------------------------------------------- PyTorch

def _tensors(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict as tensors (it may come as NumPy arrays from an ``.npz``)."""
    import torch

    return {name: torch.as_tensor(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
            for name, value in state_dict.items()}


def _torch_parts():
    from collections import OrderedDict

    import torch
    import torch.nn.functional as F
    from torch import nn

    class Blocks(nn.Module):
        """Feature blocks ``start..end-1`` of torchvision's MobileNetV2, named ``features.<i>``,
        always in eval mode (batch norm in inference mode); NCHW in, NCHW out. Run channels-last:
        measured 1.6x faster on this CPU (oneDNN's depthwise kernels prefer it)."""

        def __init__(self, state_dict: Mapping[str, Any], start: int, end: int):
            super().__init__()
            features = mb.torch_mobilenet_v2(_tensors(state_dict), include_top=True).features
            # keyed by torchvision's block numbers, so parameter names are the same as in the whole net
            self.features = nn.Sequential(OrderedDict((str(i), features[i]) for i in range(start, end)))
            self.features.to(memory_format=torch.channels_last)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x.contiguous(memory_format=torch.channels_last))

        def train(self, mode: bool = True) -> "Blocks":
            return super().train(False)

    class TorchStem(nn.Module):
        """NHWC images in [0, 1] -> NHWC activations after block ``cut - 1`` (pooled at the end)."""

        def __init__(self, state_dict: Mapping[str, Any], image_size: int, channels: int, cut: int):
            super().__init__()
            self.image_size, self.channels, self.cut = int(image_size), int(channels), int(cut)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32).reshape(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32).reshape(1, 3, 1, 1))
            self.blocks = Blocks(state_dict, 0, cut)
            self.requires_grad_(False)

        def preprocess(self, x: torch.Tensor) -> torch.Tensor:
            """(N, H, W, C) in [0, 1] -> (N, 3, image_size, image_size), ImageNet-normalised."""
            x = x.permute(0, 3, 1, 2)
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=False)
            if self.channels == 1:
                x = x.repeat(1, 3, 1, 1)
            return (x - self.mean) / self.std

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.blocks(self.preprocess(x))
            return x.mean(dim=(2, 3)) if self.cut == FROZEN else x.permute(0, 2, 3, 1)

        def train(self, mode: bool = True) -> "TorchStem":
            return super().train(False)

    class TorchTop(nn.Module):
        """NHWC activations of block ``cut - 1`` (or pooled features) -> logits."""

        def __init__(self, state_dict: Mapping[str, Any] | None, cut: int, n_classes: int, dropout: float):
            super().__init__()
            self.cut = int(cut)
            if self.cut < FROZEN:
                self.blocks = Blocks(state_dict, cut, FROZEN)
                for name, module in self.blocks.named_modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.requires_grad_(False)
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(FEATURES, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.cut < FROZEN:
                x = self.blocks(x.permute(0, 3, 1, 2)).mean(dim=(2, 3))
            return self.classifier(self.dropout(x))

    class TorchTransferNet(nn.Module):
        """``top(stem(x))``: NHWC images in [0, 1] -> logits."""

        def __init__(self, stem: nn.Module, top: nn.Module):
            super().__init__()
            self.stem, self.top = stem, top

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.top(self.stem(x))

    return TorchStem, TorchTop, TorchTransferNet


def torch_stem(state_dict: Mapping[str, Any], image_size: int, cut: int = FROZEN,
               input_shape: tuple = INPUT_SHAPE) -> torch.nn.Module:
    """The frozen torch stem: nothing in it requires a gradient, and it stays in eval mode."""
    check_cut(cut)
    _check_image_shape(input_shape)
    return _torch_parts()[0](state_dict, image_size, input_shape[2], cut).eval()


def torch_top(state_dict: Mapping[str, Any] | None, cut: int, n_classes: int, dropout: float = 0.2,
              seed: int = 0) -> torch.nn.Module:
    """The torch top: blocks ``cut..18`` (trainable, batch norm aside) + the new head (:func:`head_weights`).
    ``state_dict`` may be None when ``cut`` is 19 (the head alone)."""
    import torch

    check_cut(cut)
    top = _torch_parts()[1](state_dict, cut, n_classes, dropout)
    head = head_weights(n_classes, seed)
    with torch.no_grad():
        top.classifier.weight.copy_(torch.from_numpy(head["kernel"].T.copy()))
        top.classifier.bias.copy_(torch.from_numpy(head["bias"]))
    return top.eval()


def torch_transfer_net(state_dict: Mapping[str, Any], n_classes: int, image_size: int, cut: int = FROZEN,
                       dropout: float = 0.2, seed: int = 0, input_shape: tuple = INPUT_SHAPE) -> torch.nn.Module:
    """The whole torch network, raw images -> logits: what an exported variant computes."""
    stem = torch_stem(state_dict, image_size, cut, input_shape)
    return _torch_parts()[2](stem, torch_top(state_dict, cut, n_classes, dropout, seed)).eval()


# --------------------------------------------------------------------------- Keras

def keras_stem(ported_weights: Mapping[str, Any], image_size: int, cut: int = FROZEN,
               input_shape: tuple = INPUT_SHAPE) -> keras.Model:
    """The frozen Keras stem (``trainable=False``), same function as :func:`torch_stem`."""
    import keras
    from keras import layers

    check_cut(cut)
    _check_image_shape(input_shape)
    base = mb.keras_mobilenet_v2(ported_weights, input_shape=(image_size, image_size, 3),
                                 include_top=False, blocks=(0, cut))
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")(inputs)
    if input_shape[2] == 1:
        x = layers.Concatenate(axis=-1, name="grey_to_rgb")([x, x, x])
    # (x - mean) / std as a Rescaling: Normalization's fixed statistics become extra ONNX inputs in tf2onnx
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    x = layers.Rescaling(scale=1.0 / std, offset=-mean / std, name="imagenet_normalise")(x)
    stem = keras.Model(inputs, base(x, training=False), name=f"mobilenet_v2_stem_{cut}")
    stem.trainable = False
    return stem


def keras_top(ported_weights: Mapping[str, Any] | None, cut: int, input_shape: tuple, n_classes: int,
              dropout: float = 0.2, seed: int = 0) -> keras.Model:
    """The Keras top, same function and same trainable tensors as :func:`torch_top`; ``input_shape``
    is the stem's output shape (:func:`stem_output_shape`)."""
    import keras
    from keras import layers

    check_cut(cut)
    inputs = keras.Input(shape=tuple(input_shape), name="stem_output")
    x = inputs
    if cut < FROZEN:
        blocks = mb.keras_mobilenet_v2(ported_weights, input_shape=tuple(input_shape), include_top=False,
                                       blocks=(cut, FROZEN))
        for layer in blocks.layers:  # batch norm frozen: trainable=False keeps it in inference mode
            layer.trainable = not isinstance(layer, layers.BatchNormalization)
        x = blocks(x, training=False)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name=f"mobilenet_v2_top_{cut}")
    head = head_weights(n_classes, seed)
    model.get_layer("head").set_weights([head["kernel"], head["bias"]])
    return model


def keras_transfer_net(ported_weights: Mapping[str, Any], n_classes: int, image_size: int, cut: int = FROZEN,
                       dropout: float = 0.2, seed: int = 0, input_shape: tuple = INPUT_SHAPE) -> keras.Model:
    """The whole Keras network, raw images -> probabilities: what an exported variant computes."""
    import keras

    stem = keras_stem(ported_weights, image_size, cut, input_shape)
    top = keras_top(ported_weights, cut, stem_output_shape(image_size, cut), n_classes, dropout, seed)
    return keras.Model(stem.input, top(stem.output), name="mobilenet_v2_transfer")


def torch_stem_outputs(state_dict: Mapping[str, Any], x: np.ndarray, image_size: int, cut: int,
                       batch_size: int = 250, desc: str = "stem") -> tuple[np.ndarray, np.ndarray]:
    """Both stems' outputs for images ``x`` in one pass: the activations before block ``cut``
    (NHWC) and the pooled 1280 features of the whole backbone -- what ``torch_stem(cut)`` and
    ``torch_stem(FROZEN)`` give, computed once."""
    import torch
    from tqdm import tqdm

    check_cut(cut)
    trunk_stem = torch_stem(state_dict, image_size, cut, tuple(x.shape[1:]))
    rest = torch_top(state_dict, cut, n_classes=1).blocks if cut < FROZEN else None
    trunks, features = [], []
    with torch.no_grad():
        for start in tqdm(range(0, len(x), batch_size), desc=desc, unit="batch", leave=False, disable=None):
            trunk = trunk_stem(torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size])))
            trunks.append(trunk.numpy())
            pooled = trunk if rest is None else rest(trunk.permute(0, 3, 1, 2)).mean(dim=(2, 3))
            features.append(pooled.numpy())
    shape = (0, *stem_output_shape(image_size, cut))
    return (np.concatenate(trunks) if trunks else np.empty(shape, np.float32),
            np.concatenate(features) if features else np.empty((0, FEATURES), np.float32))
