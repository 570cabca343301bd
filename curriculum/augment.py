"""Seeded, per-epoch image augmentation with the curriculum's ImageDataGenerator settings.

Every training epoch sees fresh random transforms, as with Keras' ``ImageDataGenerator``; the
parameter names follow it (rotation_range in degrees, shifts and zoom as fractions). The
transforms are drawn with NumPy from ``(seed, epoch)`` alone, so the torch and Keras back ends
train on the very same images, and a resumed run regenerates exactly the epochs it missed.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def random_affine(image: np.ndarray, rng: np.random.Generator, settings: Any) -> np.ndarray:
    """Rotate, shift, zoom and maybe flip one HWC image about its centre (edges filled 'nearest')."""
    from scipy import ndimage  # training with augmentation only: other stages skip its import

    height, width = image.shape[:2]
    angle = np.deg2rad(rng.uniform(-settings.rotation_range, settings.rotation_range))
    zoom = rng.uniform(1 - settings.zoom_range, 1 + settings.zoom_range)
    shift = np.array([
        rng.uniform(-settings.height_shift_range, settings.height_shift_range) * height,
        rng.uniform(-settings.width_shift_range, settings.width_shift_range) * width,
    ])
    flip = settings.horizontal_flip and rng.random() < 0.5
    # affine_transform maps output coordinates to input ones: invert rotation and zoom.
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.array([[cos, -sin], [sin, cos]]) / zoom
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    offset = centre - matrix @ (centre + shift)
    out = np.empty_like(image)
    for channel in range(image.shape[2]):
        out[..., channel] = ndimage.affine_transform(
            image[..., channel], matrix, offset=offset, order=1, mode="nearest"
        )
    return out[:, ::-1] if flip else out


def augment_epoch(x: np.ndarray, settings: Any, seed: int, epoch: int) -> np.ndarray:
    """One epoch's augmented copy of the (n, height, width, channels) images ``x``, in their order:
    image ``i`` gets the ``i``-th transform drawn from ``np.random.default_rng([seed, epoch])``."""
    rng = np.random.default_rng([seed, epoch])
    return np.stack([random_affine(image, rng, settings) for image in x]) if len(x) else x.copy()
