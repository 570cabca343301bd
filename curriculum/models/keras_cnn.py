"""The curriculum's small CNN in Keras 3: Conv32-Conv64-Conv64-Dense64, dropout, softmax."""
from __future__ import annotations

from typing import Any, Mapping

import keras
from keras import layers


def build_small_cnn(spec: Mapping[str, Any], train: Any) -> keras.Model:
    """Conv2D 32 -> MaxPool -> Conv2D 64 -> MaxPool -> Conv2D 64 -> Flatten -> Dense 64 -> Dropout -> Dense softmax.

    ``l2`` adds a kernel penalty to every Conv2D/Dense layer; ``batch_norm`` inserts batch
    normalisation between each convolution and its ReLU.
    """
    l2 = train.l2
    regularizer = keras.regularizers.L2(l2) if l2 else None

    def conv_block(filters: int) -> list[layers.Layer]:
        if not train.batch_norm:
            return [layers.Conv2D(filters, 3, activation="relu", kernel_regularizer=regularizer)]
        return [
            layers.Conv2D(filters, 3, use_bias=False, kernel_regularizer=regularizer),
            layers.BatchNormalization(),
            layers.ReLU(),
        ]

    return keras.Sequential(
        [
            keras.Input(shape=tuple(spec["input_shape"])),
            *conv_block(32),
            layers.MaxPooling2D(2),
            *conv_block(64),
            layers.MaxPooling2D(2),
            *conv_block(64),
            layers.Flatten(),
            layers.Dense(64, activation="relu", kernel_regularizer=regularizer),
            layers.Dropout(train.dropout),
            layers.Dense(spec["n_outputs"], activation="softmax"),
        ],
        name="small_cnn",
    )
