"""ImageNet preprocessing exactly as torchvision evaluates its classification weights.

torchvision scores ``IMAGENET1K_V1`` weights (MobileNetV2: top-1 71.878 %) with
``Resize(256)`` (shorter side to 256, bilinear, Pillow) -> ``CenterCrop(224)`` -> scale to [0, 1]
-> normalise with the ImageNet channel mean and std. We do the same rather than resize straight to
224x224, which would squash the aspect ratio and feed the network images unlike those it was
scored on. Written with NumPy and Pillow only, so the PyTorch and the Keras model receive the very
same array (NHWC here; ``to_nchw`` for PyTorch).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE = 256
CROP = 224


def preprocess(image: np.ndarray, *, resize: int = RESIZE, crop: int = CROP) -> np.ndarray:
    """An RGB ``uint8`` image (H, W, 3) -> normalised ``float32`` (crop, crop, 3).

    Matches ``torchvision.transforms`` ``Resize(resize)``, ``CenterCrop(crop)``, ``ToTensor()``,
    ``Normalize(IMAGENET_MEAN, IMAGENET_STD)`` on a Pillow image (tests check it bit for bit).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    # torchvision's rule for Resize(int): the shorter side becomes `resize`, the longer is truncated.
    if height <= width:
        size = (int(resize * width / height), resize)
    else:
        size = (resize, int(resize * height / width))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    top = int(round((resized.shape[0] - crop) / 2.0))
    left = int(round((resized.shape[1] - crop) / 2.0))
    if top < 0 or left < 0:
        raise ValueError(f"crop {crop} is larger than the resized image {resized.shape[:2]}")
    cropped = resized[top : top + crop, left : left + crop].astype(np.float32) / np.float32(255)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return (cropped - mean) / std


def to_nchw(batch: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> contiguous (N, C, H, W), PyTorch's layout."""
    return np.ascontiguousarray(np.asarray(batch).transpose(0, 3, 1, 2))
