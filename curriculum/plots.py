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


def confidently_wrong_table(
    texts: Sequence[str], y_true: np.ndarray, confidence: np.ndarray, class_names: Sequence[str], limit: int
) -> bytes:
    """The ``limit`` wrong predictions the model was surest of, as a table a person reads: its
    confidence in the wrong answer, the true class and the text (wrapped), as PNG bytes.
    ``confidence`` is the probability the model gave its (wrong) answer, NaN where it was right."""
    import textwrap

    wrong = np.flatnonzero(~np.isnan(confidence))
    shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]
    truth_width = max(len("truth"), *(len(name) for name in class_names))
    lines = [f"{'confidence':>10}  {'truth':<{truth_width}}  text", ""]
    for index in shown:
        wrapped = textwrap.wrap(" ".join(str(texts[index]).split()), 100) or [""]
        lines.append(f"{confidence[index]:>10.3f}  {class_names[y_true[index]]:<{truth_width}}  {wrapped[0]}")
        lines += [" " * (14 + truth_width) + line for line in wrapped[1:]]
    line_height = 0.16  # inches, at 8.5 pt
    figure = plt.figure(figsize=(10.5, 0.5 + line_height * (len(lines) + 1)))
    figure.text(0.01, 1 - 0.3 / figure.get_figheight(),
                f"{len(wrong)} of {len(y_true)} test examples wrong; the {len(shown)} the model was surest of",
                fontsize=10, va="top")
    figure.text(0.01, 1 - 0.55 / figure.get_figheight(), "\n".join(lines), family="monospace", fontsize=8.5,
                va="top", linespacing=1.35)
    return figure_png(figure)


def figure_png(figure: plt.Figure, dpi: int = 80) -> bytes:
    """Render and close a figure; the PNG carries no timestamp, so the same plot gives the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def figure_jpeg(figure: plt.Figure, dpi: int = 80, quality: int = 85) -> bytes:
    """Render and close a figure of photographs as a JPEG (a fifth of the PNG's size); Pillow
    writes no timestamp either."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="jpeg", dpi=dpi, pil_kwargs={"quality": quality, "optimize": True})
    plt.close(figure)
    return buffer.getvalue()
