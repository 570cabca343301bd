"""Seeded, stratified train/validation/test splits."""
from __future__ import annotations

import numpy as np


def stratified_split(
    raw: dict[str, np.ndarray], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Split ``x``/``y`` into train, val and test, keeping class proportions in each.

    A dataset that publishes its own test split (``x_test``/``y_test``) keeps it, and only
    the validation split is carved out of the training data.
    """
    from sklearn.model_selection import train_test_split  # only preprocess splits: others skip its import

    x, y = raw["x"], raw["y"]
    if "x_test" in raw:
        x_test, y_test = raw["x_test"], raw["y_test"]
    else:
        x, x_test, y, y_test = train_test_split(
            x, y, test_size=test_fraction, stratify=y, random_state=seed
        )
    val_share = val_fraction / (1 - test_fraction) if "x_test" not in raw else val_fraction
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_share, stratify=y, random_state=seed
    )
    return {
        "x_train": x_train, "y_train": y_train,
        "x_val": x_val, "y_val": y_val,
        "x_test": x_test, "y_test": y_test,
    }
