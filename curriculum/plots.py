"""Figures people would rather see than read, written as PNG for ``dvc plots``."""
from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def misclassified_grid(
    images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], limit: int
) -> bytes:
    """Up to ``limit`` misclassified images titled 'true -> predicted', as PNG bytes."""
    wrong = np.flatnonzero(y_true != y_pred)
    shown = wrong[:limit]
    columns = 5
    rows = max(1, int(np.ceil(len(shown) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.2 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, shown):
        image = images[index]
        axis.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        axis.set_title(f"{class_names[y_true[index]]} -> {class_names[y_pred[index]]}", fontsize=9)
    figure.suptitle(f"{len(wrong)} of {len(y_true)} test images misclassified (first {len(shown)} shown)")
    figure.tight_layout()
    return figure_png(figure)


def figure_png(figure: plt.Figure, dpi: int = 80) -> bytes:
    """Render and close a figure; the PNG carries no timestamp, so the same plot gives the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()
