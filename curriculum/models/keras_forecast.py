"""Forecasting models in Keras 3: LSTM, GRU and LSTM + attention, layer for layer the PyTorch
ones in ``torch_forecast``.

Every model maps a window ``(batch, lookback, n_features)`` float32 to ``(batch, horizon)``: one
model predicts all horizon steps at once, in the (scaled) units of its targets, with a linear
output. ``spec`` gives the window shape (``lookback``, ``n_features``, ``horizon``); ``train`` is
the typed train config, of which the builders read:

- ``units``: hidden size of every recurrent layer (and the attention's model width);
- ``layers``: number of stacked recurrent layers;
- ``dropout``: rate of the dropout between stacked recurrent layers and before the output layer;
- ``heads``: attention heads (``build_attention`` only; must divide ``units``).

Keras' default initialisers (Glorot-uniform kernels, orthogonal recurrent kernels, zero biases,
forget-gate bias 1) are the ones the torch models copy. The builders return uncompiled models.
"""
from __future__ import annotations

from typing import Any, Mapping

import keras
from keras import layers


def _recurrent_stack(layer: type[layers.Layer], x, train: Any, last_sequences: bool):
    """``layers`` recurrent layers with Dropout between them; the last returns every step only
    when ``last_sequences`` (the attention encoder), otherwise just its final state."""
    for index in range(train.layers):
        if index:
            x = layers.Dropout(train.dropout)(x)
        x = layer(train.units, return_sequences=last_sequences or index < train.layers - 1)(x)
    return x


def _recurrent_model(layer: type[layers.Layer], spec: Mapping[str, Any], train: Any, name: str) -> keras.Model:
    inputs = keras.Input(shape=(spec["lookback"], spec["n_features"]), name="window")
    last = _recurrent_stack(layer, inputs, train, last_sequences=False)
    outputs = layers.Dense(spec["horizon"], name="forecast")(layers.Dropout(train.dropout)(last))
    return keras.Model(inputs, outputs, name=name)


def build_lstm(spec: Mapping[str, Any], train: Any) -> keras.Model:
    """``layers`` × LSTM(``units``) -> Dropout -> Dense(horizon), linear output."""
    return _recurrent_model(layers.LSTM, spec, train, "lstm_forecaster")


def build_gru(spec: Mapping[str, Any], train: Any) -> keras.Model:
    """``layers`` × GRU(``units``, reset_after=True as torch's GRU) -> Dropout -> Dense(horizon)."""
    return _recurrent_model(layers.GRU, spec, train, "gru_forecaster")


def build_attention(spec: Mapping[str, Any], train: Any) -> keras.Model:
    """LSTM encoder; the last step's state attends over every step's state (MultiHeadAttention,
    ``heads`` heads of width units/heads); [context, last state] -> Dropout -> Dense(horizon)."""
    units, heads = train.units, train.heads
    if units % heads:
        raise ValueError(f"heads ({heads}) must divide units ({units})")
    inputs = keras.Input(shape=(spec["lookback"], spec["n_features"]), name="window")
    states = _recurrent_stack(layers.LSTM, inputs, train, last_sequences=True)
    # the last step's state, (batch, 1, units); Cropping1D rather than a Lambda keeps the model
    # loadable from a .keras file in safe mode
    last = layers.Cropping1D((spec["lookback"] - 1, 0), name="last_state")(states)
    context = layers.MultiHeadAttention(heads, units // heads, name="attention")(last, states)
    features = layers.Flatten()(layers.Concatenate()([context, last]))
    outputs = layers.Dense(spec["horizon"], name="forecast")(layers.Dropout(train.dropout)(features))
    return keras.Model(inputs, outputs, name="attention_forecaster")
