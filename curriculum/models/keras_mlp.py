"""The curriculum's simple feed-forward binary classifier in Keras 3."""
from __future__ import annotations

from typing import Any, Mapping

import keras
from keras import layers


def build_mlp(spec: Mapping[str, Any], train: Any) -> keras.Model:
    """Dense(hidden_units, relu) -> Dense(1, sigmoid): the torch ``build_mlp`` with the sigmoid inside.

    Keras' defaults are Glorot-uniform kernels and zero biases, as the torch and NumPy versions use.
    ``l2`` adds a kernel penalty to both Dense layers.
    """
    l2 = train.l2
    n_outputs = spec["n_outputs"]
    regularizer = keras.regularizers.L2(l2) if l2 else None
    return keras.Sequential(
        [
            keras.Input(shape=tuple(spec["input_shape"])),
            layers.Dense(train.hidden_units, activation="relu", kernel_regularizer=regularizer),
            layers.Dense(n_outputs, activation="sigmoid" if n_outputs == 1 else "softmax", kernel_regularizer=regularizer),
        ],
        name="simple_nn",
    )
