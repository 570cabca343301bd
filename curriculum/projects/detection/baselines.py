"""The reference method every detector is compared with: classical crown finding without learning.

Local maxima of a smoothed excess-green index (2G - R - B), the textbook way to find tree tops in
RGB aerial images, each given a box of the training boxes' median size; its score is the
smoothed greenness at the peak, so mAP ranks its boxes like any detector's. What it learns from
the training split: the box size only.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from curriculum.layout import ProcessedData
from curriculum.projects.detection import boxes as box_ops


def greenness_peaks(images: np.ndarray, width: float, height: float, max_detections: int) -> dict[str, np.ndarray]:
    """Peaks of excess green at least half a median crown apart, the strongest ``max_detections``
    per image, as padded predictions."""
    n = len(images)
    out = {"boxes": np.zeros((n, max_detections, 4), np.float32), "scores": np.zeros((n, max_detections), np.float32),
           "labels": np.full((n, max_detections), -1, np.int64)}
    spacing = max(3, int(round(min(width, height) / 2)))
    for i, image in enumerate(images.astype(np.float32) / 255.0):
        green = 2 * image[..., 1] - image[..., 0] - image[..., 2]
        smooth = ndimage.gaussian_filter(green, sigma=spacing / 4)
        peaks = (smooth == ndimage.maximum_filter(smooth, size=spacing)) & (smooth > smooth.mean())
        rows, cols = np.nonzero(peaks)
        order = np.argsort(-smooth[rows, cols], kind="stable")[:max_detections]
        rows, cols = rows[order], cols[order]
        size = image.shape[0]
        found = np.stack([cols + 0.5 - width / 2, rows + 0.5 - height / 2, cols + 0.5 + width / 2,
                          rows + 0.5 + height / 2], axis=1).clip(0, size)
        k = len(order)
        out["boxes"][i, :k] = found
        out["scores"][i, :k] = 1 / (1 + np.exp(-8 * smooth[rows, cols]))  # in (0, 1), order kept
        out["labels"][i, :k] = 0
    return out


def detection_baselines(data: ProcessedData, config) -> dict[str, dict[str, np.ndarray]]:
    train = np.concatenate([box_ops.unpad(y) for y in data.split("train")["y"]])
    width, height = np.median(train[:, 2] - train[:, 0]), np.median(train[:, 3] - train[:, 1])
    return {"greenness_peaks": greenness_peaks(data.split("test")["x"], float(width), float(height),
                                               config.train.max_detections)}
