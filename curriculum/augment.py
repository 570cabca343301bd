"""Seeded image augmentation with the curriculum's ImageDataGenerator settings.

Augmented copies are made once, in the preprocess stage, so both frameworks train on the
very same images and DVC caches them; the parameter names follow Keras'
``ImageDataGenerator`` (rotation_range in degrees, shifts and zoom as fractions).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from tqdm import tqdm


def random_affine(image: np.ndarray, rng: np.random.Generator, settings: Any) -> np.ndarray:
    """Rotate, shift, zoom and maybe flip one HWC image about its centre (edges filled 'nearest')."""
    from scipy import ndimage  # preprocess only: other stages skip its import

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


def augment(x: np.ndarray, y: np.ndarray, settings: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the originals followed by ``settings['copies']`` augmented copies of each image."""
    copies = int(settings.copies)
    if copies == 0:
        return x, y
    rng = np.random.default_rng(seed)
    augmented = [
        random_affine(image, rng, settings)
        for _ in range(copies)
        for image in tqdm(x, desc="augment", unit="img", leave=False, disable=None)  # no bar in logs
    ]
    return np.concatenate([x, np.stack(augmented)]), np.concatenate([y] + [y] * copies)
