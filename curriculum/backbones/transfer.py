"""Transfer learning on the ImageNet MobileNetV2: the same network in PyTorch and in Keras.

Both builders are pure -- the backbone's weights come in as an argument (the torch state dict,
or :func:`curriculum.backbones.mobilenet_v2.port_weights`' dict for Keras) -- and both networks
take what every curriculum image model takes: float32 NHWC images in [0, 1] at the data's own
size (Fashion-MNIST: 28x28x1). Everything ImageNet needs happens inside the graph, so the
exported model takes the raw image too:

    resize to image_size x image_size (bilinear, half-pixel centres, no antialiasing)
    -> grey to RGB (the channel repeated) -> ImageNet normalisation (on [0, 1] pixels)
    -> MobileNetV2 features (blocks 0..18) -> global average pool (1280) -> dropout -> dense

Keras' ``layers.Resizing(interpolation="bilinear")`` and torch's
``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` compute the same
samples. The torch module returns logits (the task's head applies softmax); the Keras model
ends in a softmax, as the curriculum's models do.

Training the backbone or not:

* ``trainable_from_block=None`` -- frozen: no backbone weight is trained, only the new head.
* ``trainable_from_block=k`` -- fine-tune: blocks ``k..18`` (``block_of``, the same blocks in
  both frameworks) are trained as well, the rest stay frozen.

Either way the backbone's batch norm stays in inference mode -- its running statistics never
move, and it normalises with them, not with the batch's -- and its scale and shift are frozen
too, in every block. That is the documented Keras pitfall, and the usual advice (Keras'
transfer-learning guide: call the base with ``training=False`` and keep batch norm frozen).
In Keras 3 the call alone is not enough: a functional model passes its *own* ``training``
flag to every layer it runs (``keras.src.models.functional.operation_fn``), overriding the
``training=False`` recorded for the nested base, so ``fit`` would update the running
statistics of any trainable batch-norm layer. A ``BatchNormalization`` with
``trainable=False``, however, always runs in inference mode, so the Keras net freezes every
batch-norm layer of the backbone (and still calls the base with ``training=False``). The
torch net matches: :class:`TorchTransferNet` keeps its backbone in eval mode under
``.train()``, and batch-norm parameters never require gradients -- the same tensors train in
both frameworks.

The heads of the two frameworks start equal: both draw Keras' Glorot-uniform kernel and zero
bias from one seeded NumPy generator (:func:`head_weights`), so a torch and a Keras network
built with the same weights and seed give the same probabilities before training.
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


def head_weights(n_classes: int, seed: int, n_features: int = FEATURES) -> dict[str, np.ndarray]:
    """The new head's starting weights, the same for both frameworks: Glorot-uniform kernel
    ``(n_features, n_classes)`` (Keras' layout; torch's Linear takes its transpose), zero bias."""
    limit = np.sqrt(6.0 / (n_features + n_classes))
    rng = np.random.default_rng(seed)
    kernel = rng.uniform(-limit, limit, size=(n_features, n_classes)).astype(np.float32)
    return {"kernel": kernel, "bias": np.zeros(n_classes, np.float32)}


def _check(trainable_from_block: int | None, input_shape: tuple) -> None:
    if trainable_from_block is not None and not 0 <= trainable_from_block < mb.N_BLOCKS:
        raise ValueError(f"trainable_from_block must be None (frozen) or 0..{mb.N_BLOCKS - 1}, "
                         f"got {trainable_from_block}")
    if len(input_shape) != 3 or input_shape[2] not in (1, 3):
        raise ValueError(f"expected an (height, width, 1 or 3) image shape, got {tuple(input_shape)}")


def is_trainable(name: str, trainable_from_block: int | None, batch_norm: bool = False) -> bool:
    """Whether a backbone parameter / layer (torch name or Keras path) is trained: one of a block
    ``>= trainable_from_block`` that is not batch norm's."""
    if batch_norm:
        return False
    block = mb.block_of(name)
    return trainable_from_block is not None and block is not None and block >= trainable_from_block


# --------------------------------------------------------------------------- PyTorch

def _torch_net_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TorchTransferNet(nn.Module):
        """NHWC [0, 1] images -> logits. The backbone (``features``) stays in eval mode always."""

        def __init__(self, features: nn.Module, n_classes: int, image_size: int, channels: int, dropout: float):
            super().__init__()
            self.image_size = int(image_size)
            self.channels = int(channels)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32).reshape(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32).reshape(1, 3, 1, 1))
            self.features = features
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(FEATURES, n_classes)

        def preprocess(self, x: torch.Tensor) -> torch.Tensor:
            """(N, H, W, C) in [0, 1] -> (N, 3, image_size, image_size), ImageNet-normalised."""
            x = x.permute(0, 3, 1, 2)
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=False)
            if self.channels == 1:
                x = x.repeat(1, 3, 1, 1)
            return (x - self.mean) / self.std

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(self.features(self.preprocess(x))).flatten(1)
            return self.classifier(self.dropout(x))

        def train(self, mode: bool = True) -> "TorchTransferNet":
            super().train(mode)
            self.features.eval()  # batch norm in inference mode, even while fine-tuning
            return self

    return TorchTransferNet


def torch_transfer_net(
    state_dict: Mapping[str, Any],
    n_classes: int,
    image_size: int,
    trainable_from_block: int | None = None,
    dropout: float = 0.2,
    seed: int = 0,
    input_shape: tuple = INPUT_SHAPE,
) -> torch.nn.Module:
    """The torch transfer network: NHWC ``input_shape`` images in [0, 1] -> ``n_classes`` logits.

    Backbone parameters are named as in torchvision (``features.14.conv.1.0.weight``); those
    below ``trainable_from_block`` (all of them when it is ``None``), and every batch-norm scale
    and shift, have ``requires_grad=False``,
    so train with ``filter(lambda p: p.requires_grad, net.parameters())``. The head is
    :func:`head_weights` (``seed``). Returned in eval mode.
    """
    import torch

    _check(trainable_from_block, input_shape)
    features = mb.torch_mobilenet_v2(state_dict, include_top=True).features
    for name, module in features.named_modules(prefix="features"):
        batch_norm = isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(is_trainable(name, trainable_from_block, batch_norm))
    net = _torch_net_class()(features, n_classes, image_size, input_shape[2], dropout)
    head = head_weights(n_classes, seed)
    with torch.no_grad():
        net.classifier.weight.copy_(torch.from_numpy(head["kernel"].T.copy()))
        net.classifier.bias.copy_(torch.from_numpy(head["bias"]))
    return net.eval()


# --------------------------------------------------------------------------- Keras

def keras_transfer_net(
    ported_weights: Mapping[str, Any],
    n_classes: int,
    image_size: int,
    trainable_from_block: int | None = None,
    dropout: float = 0.2,
    seed: int = 0,
    input_shape: tuple = INPUT_SHAPE,
) -> keras.Model:
    """The Keras transfer network: NHWC ``input_shape`` images in [0, 1] -> class probabilities.

    The backbone is a nested model (``mobilenet_v2_features``) called with ``training=False``,
    so its batch norm stays in inference mode whatever is trainable; its layers below
    ``trainable_from_block`` (all when ``None``), and all its batch-norm layers, are
    ``trainable=False``. ``ported_weights`` is
    :func:`~curriculum.backbones.mobilenet_v2.port_weights`' dict (or the torch state dict). The
    head is :func:`head_weights` (``seed``), as in :func:`torch_transfer_net`.
    """
    import keras
    from keras import layers

    _check(trainable_from_block, input_shape)
    base = mb.keras_mobilenet_v2(ported_weights, input_shape=(image_size, image_size, 3), include_top=False)
    if trainable_from_block is None:
        base.trainable = False
    else:
        for layer in base.layers:  # batch norm frozen: trainable=False keeps it in inference mode
            batch_norm = isinstance(layer, layers.BatchNormalization)
            layer.trainable = is_trainable(layer.name, trainable_from_block, batch_norm)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")(inputs)
    if input_shape[2] == 1:
        x = layers.Concatenate(axis=-1, name="grey_to_rgb")([x, x, x])
    x = layers.Normalization(mean=list(IMAGENET_MEAN), variance=[s * s for s in IMAGENET_STD],
                             name="imagenet_normalise")(x)
    x = base(x, training=False)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name="mobilenet_v2_transfer")
    head = head_weights(n_classes, seed)
    model.get_layer("head").set_weights([head["kernel"], head["bias"]])
    return model


# --------------------------------------------------------------------------- builder(spec, train)

def _from_train(spec: Mapping[str, Any], train: Any) -> dict[str, Any]:
    return {
        "n_classes": spec["n_outputs"],
        "input_shape": tuple(spec["input_shape"]),
        "image_size": train.image_size,
        "trainable_from_block": getattr(train, "trainable_from_block", None),
        "dropout": train.dropout,
        "seed": getattr(train, "seed", 0),
    }


def torch_builder(state_dict: Mapping[str, Any]):
    """A ``builder(spec, train)`` for the torch backend, the weights bound (the stage loads them).

    Reads ``train.image_size``, ``train.dropout`` and, when present, ``train.trainable_from_block``
    and ``train.seed``."""
    return lambda spec, train: torch_transfer_net(state_dict, **_from_train(spec, train))


def keras_builder(ported_weights: Mapping[str, Any]):
    """A ``builder(spec, train)`` for the Keras backend; see :func:`torch_builder`."""
    return lambda spec, train: keras_transfer_net(ported_weights, **_from_train(spec, train))
