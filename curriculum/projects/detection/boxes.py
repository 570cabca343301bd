"""Boxes with their pixels: unpacking the raw images, tiling, padding, and box-aware augmentation.

Pure NumPy, no framework. Boxes are ``x_min, y_min, x_max, y_max`` in pixels, 0-based continuous
coordinates (a pixel ``i`` spans ``[i, i + 1)``), so flipping an image of width ``W`` maps
``x`` to ``W - x`` exactly. A split's targets are padded to one array (``N, M, 5``: the four
coordinates and the label) with rows of -1 after an image's own boxes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curriculum.layout import Arrays

PAD = -1.0


def images(raw: Arrays) -> list[np.ndarray]:
    """The raw data's images, each ``(height, width, 3)`` uint8, out of the packed pixel array."""
    pixels, offsets, shapes = raw["image_pixels"], raw["image_offset"], raw["image_shape"]
    return [pixels[start:start + int(np.prod(shape))].reshape(shape) for start, shape in zip(offsets, shapes)]


def image_boxes(raw: Arrays, index: int) -> np.ndarray:
    """Image ``index``'s boxes and labels as one ``(k, 5)`` float32 array."""
    mine = raw["box_image"] == index
    return np.concatenate([raw["box"][mine], raw["box_label"][mine, None]], axis=1).astype(np.float32)


def tile_starts(length: int, tile: int) -> list[int]:
    """Tile origins along one axis: every ``tile`` pixels, the last one aligned with the image's
    end (overlapping its neighbour) so no pixel is lost and every tile is whole; 0 alone for an
    image no longer than a tile (padded later)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile))
    return [*starts, length - tile]


@dataclass(frozen=True)
class Tile:
    image: int  # index of the source image
    top: int
    left: int
    pixels: np.ndarray  # (tile, tile, 3) uint8, zero-padded right/bottom for a small image
    boxes: np.ndarray  # (k, 5) in the tile's pixels


def crop_boxes(boxes: np.ndarray, top: int, left: int, height: int, width: int, min_inside: float) -> np.ndarray:
    """The boxes that lie at least ``min_inside`` of their area inside the window, clipped to it and
    moved into its coordinates."""
    if len(boxes) == 0:
        return boxes.reshape(0, 5)
    x0 = np.clip(boxes[:, 0] - left, 0, width)
    y0 = np.clip(boxes[:, 1] - top, 0, height)
    x1 = np.clip(boxes[:, 2] - left, 0, width)
    y1 = np.clip(boxes[:, 3] - top, 0, height)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (x1 - x0) * (y1 - y0)
    keep = (inside > 0) & (inside >= min_inside * area)
    return np.stack([x0, y0, x1, y1, boxes[:, 4]], axis=1)[keep].astype(np.float32)


def tile_image(image: np.ndarray, boxes: np.ndarray, index: int, tile: int, min_inside: float) -> list[Tile]:
    """The image cut into ``tile`` x ``tile`` tiles (edge-aligned last row and column), each with
    the boxes at least ``min_inside`` inside it, clipped."""
    height, width = image.shape[:2]
    tiles = []
    for top in tile_starts(height, tile):
        for left in tile_starts(width, tile):
            crop = image[top:top + tile, left:left + tile]
            pixels = np.zeros((tile, tile, 3), np.uint8)
            pixels[:crop.shape[0], :crop.shape[1]] = crop
            kept = crop_boxes(boxes, top, left, crop.shape[0], crop.shape[1], min_inside)
            tiles.append(Tile(index, top, left, pixels, kept))
    return tiles


def overlaps(a: Tile, b: Tile, tile: int) -> bool:
    """Whether two tiles of the same image share pixels (edge-aligned tiles overlap their neighbours)."""
    return a.image == b.image and abs(a.top - b.top) < tile and abs(a.left - b.left) < tile


def pad_boxes(per_image: list[np.ndarray], rows: int | None = None) -> np.ndarray:
    """``(N, M, 5)`` float32: each image's boxes, then rows of -1 (``M``: the most boxes of any image, or ``rows``)."""
    rows = max([len(b) for b in per_image] + [1]) if rows is None else rows
    padded = np.full((len(per_image), rows, 5), PAD, np.float32)
    for i, boxes in enumerate(per_image):
        padded[i, :len(boxes)] = boxes
    return padded


def unpad(padded: np.ndarray) -> np.ndarray:
    """One image's real boxes (the rows whose label is not -1)."""
    return padded[padded[:, 4] >= 0]


# --------------------------------------------------------------------------- augmentation

#: the eight symmetries of a square (aerial images have no "up"): (transpose, flip x, flip y)
SYMMETRIES = tuple((t, fx, fy) for t in (False, True) for fx in (False, True) for fy in (False, True))


def transform_image(image: np.ndarray, symmetry: tuple[bool, bool, bool]) -> np.ndarray:
    """An ``(S, S, 3)`` image under one symmetry: transposed (x and y swapped), then mirrored."""
    transpose, flip_x, flip_y = symmetry
    out = image.transpose(1, 0, 2) if transpose else image
    if flip_x:
        out = out[:, ::-1]
    if flip_y:
        out = out[::-1]
    return out


def transform_boxes(boxes: np.ndarray, symmetry: tuple[bool, bool, bool], size: int) -> np.ndarray:
    """The padded boxes ``(M, 5)`` of an ``size`` x ``size`` image under the same symmetry as
    :func:`transform_image` (padding rows stay -1)."""
    transpose, flip_x, flip_y = symmetry
    out = boxes.copy()
    real = boxes[:, 4] >= 0
    b = boxes[real]
    if transpose:
        b = b[:, [1, 0, 3, 2, 4]]
    if flip_x:
        b = np.stack([size - b[:, 2], b[:, 1], size - b[:, 0], b[:, 3], b[:, 4]], axis=1)
    if flip_y:
        b = np.stack([b[:, 0], size - b[:, 3], b[:, 2], size - b[:, 1], b[:, 4]], axis=1)
    out[real] = b
    return out


def jitter_colours(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness, contrast and per-channel gain each drawn within ``1 +/- strength`` (gains within
    half that): other sites, seasons and cameras photograph the same crowns in other colours."""
    brightness, contrast = rng.uniform(1 - strength, 1 + strength, size=2)
    gains = rng.uniform(1 - strength / 2, 1 + strength / 2, size=3)
    pixels = image.astype(np.float32)
    mean = pixels.mean()
    pixels = ((pixels - mean) * contrast + mean) * brightness * gains
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def augment_epoch(x: np.ndarray, y: np.ndarray, seed: int, epoch: int,
                  colour_jitter: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ``epoch``'s images and boxes: each image under one of the eight symmetries (and, with
    ``colour_jitter``, in other colours), drawn from ``(seed, epoch)`` alone, so every framework
    and a resumed run see the same epoch."""
    rng = np.random.default_rng([seed, epoch])
    choices = rng.integers(len(SYMMETRIES), size=len(x))
    size = x.shape[1]
    images_out = [transform_image(image, SYMMETRIES[c]) for image, c in zip(x, choices)]
    if colour_jitter > 0:
        images_out = [jitter_colours(image, rng, colour_jitter) for image in images_out]
    boxes_out = np.stack([transform_boxes(boxes, SYMMETRIES[c], size) for boxes, c in zip(y, choices)])
    return np.ascontiguousarray(np.stack(images_out)), boxes_out
