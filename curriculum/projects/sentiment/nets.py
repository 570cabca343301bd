"""The curriculum's sentiment network in both frameworks: embedding -> dropout -> LSTM (every
step) -> LSTM (last state) -> dropout -> one sigmoid unit.

It takes the tokenizer's padded ids, int64 ``(batch, max_length)``; ``spec`` gives
``input_shape`` ([max_length]), ``n_outputs`` (1) and ``n_ids`` (the embedding's rows), and
``train`` the sizes (``embedding_dim``, ``units``) and the dropout rates (``embedding_dropout`` on
each embedded token's components, ``dropout`` before the output). The ``glove_lstm`` builders take
a third argument, the fitted ``glove_embedding`` artifact (preprocess aligned GloVe's vectors with
the tokenizer's ids), as the embedding's starting weights; ``train.embedding_trainable`` says
whether they are fine-tuned.

Both start alike in kind: Keras' initialisers (uniform +-0.05 embedding, Glorot-uniform input
kernels, orthogonal recurrent kernels, forget-gate bias 1). The torch LSTMs are ``nn.LSTM`` (its
fused kernel is several times faster here than a cell written in Python) with the second bias
vector, which Keras' cell does not have, held at zero: the same cell, the same trainable
parameters.
The torch module returns the logit (the task's head applies the sigmoid); the Keras model ends
in the sigmoid, as the curriculum's models do.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    import keras
    from torch import nn

GLOVE_ARTIFACT = "glove_embedding"


def _starting_embedding(spec: Mapping[str, Any], train: Any, glove: Mapping[str, np.ndarray] | None) -> np.ndarray | None:
    """The pretrained matrix, checked against the tokenizer and the configured width."""
    if glove is None:
        return None
    weights = glove["weights"]
    if weights.shape != (spec["n_ids"], train.embedding_dim):
        raise ValueError(f"the {GLOVE_ARTIFACT} artifact is {weights.shape}, but the model needs "
                         f"({spec['n_ids']} ids, train.embedding_dim {train.embedding_dim}): set embedding_dim "
                         f"to the vectors' width ({weights.shape[1]})")
    return weights


# --------------------------------------------------------------------------- Keras


def _keras_lstm(spec: Mapping[str, Any], train: Any, glove: Mapping[str, np.ndarray] | None) -> keras.Model:
    import keras
    from keras import layers

    weights = _starting_embedding(spec, train, glove)
    ids = keras.Input(shape=tuple(spec["input_shape"]), dtype="int64", name="ids")
    embedded = layers.Embedding(
        spec["n_ids"], train.embedding_dim, name="embedding",
        embeddings_initializer="uniform" if weights is None else keras.initializers.Constant(weights),
        trainable=weights is None or train.embedding_trainable,
    )(ids)
    embedded = layers.Dropout(train.embedding_dropout, name="embedding_dropout")(embedded)
    states = layers.LSTM(train.units, return_sequences=True, name="lstm_1")(embedded)
    last = layers.LSTM(train.units, name="lstm_2")(states)
    proba = layers.Dense(spec["n_outputs"], activation="sigmoid", name="proba")(layers.Dropout(train.dropout)(last))
    return keras.Model(ids, proba, name="sentiment_lstm")


def keras_lstm(spec: Mapping[str, Any], train: Any) -> keras.Model:
    """The network from scratch."""
    return _keras_lstm(spec, train, None)


def keras_glove_lstm(spec: Mapping[str, Any], train: Any, glove: Mapping[str, np.ndarray]) -> keras.Model:
    """The network with GloVe's vectors as its starting embedding."""
    return _keras_lstm(spec, train, glove)


# --------------------------------------------------------------------------- PyTorch


def _torch_lstm(spec: Mapping[str, Any], train: Any, glove: Mapping[str, np.ndarray] | None) -> nn.Module:
    import torch
    from torch import nn

    from curriculum.models.torch_init import glorot_init_

    weights = _starting_embedding(spec, train, glove)

    def keras_lstm_layer(input_size: int) -> nn.LSTM:
        layer = nn.LSTM(input_size, train.units, batch_first=True)
        nn.init.xavier_uniform_(layer.weight_ih_l0)
        nn.init.orthogonal_(layer.weight_hh_l0)
        with torch.no_grad():
            layer.bias_ih_l0.zero_()
            layer.bias_ih_l0[train.units:2 * train.units] = 1.0  # unit_forget_bias (gates i, f, g, o)
            layer.bias_hh_l0.zero_()
        layer.bias_hh_l0.requires_grad_(False)  # Keras' cell has one bias
        return layer

    class SentimentLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(spec["n_ids"], train.embedding_dim)
            with torch.no_grad():
                if weights is None:
                    self.embedding.weight.uniform_(-0.05, 0.05)
                else:
                    self.embedding.weight.copy_(torch.from_numpy(weights))
            self.embedding.weight.requires_grad_(weights is None or train.embedding_trainable)
            self.embedding_dropout = nn.Dropout(train.embedding_dropout)
            self.lstm_1 = keras_lstm_layer(train.embedding_dim)
            self.lstm_2 = keras_lstm_layer(train.units)
            self.dropout = nn.Dropout(train.dropout)
            self.logit = glorot_init_(nn.Linear(train.units, spec["n_outputs"]))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            states = self.lstm_2(self.lstm_1(self.embedding_dropout(self.embedding(ids)))[0])[0]
            return self.logit(self.dropout(states[:, -1]))

    return SentimentLSTM()


def torch_lstm(spec: Mapping[str, Any], train: Any) -> nn.Module:
    """The network from scratch."""
    return _torch_lstm(spec, train, None)


def torch_glove_lstm(spec: Mapping[str, Any], train: Any, glove: Mapping[str, np.ndarray]) -> nn.Module:
    """The network with GloVe's vectors as its starting embedding."""
    return _torch_lstm(spec, train, glove)
