"""Forecasting models in native PyTorch: LSTM, GRU and LSTM + attention, layer for layer the
Keras ones in ``keras_forecast``.

Every model maps a window ``(batch, lookback, n_features)`` float32 to ``(batch, horizon)``: one
model predicts all horizon steps at once, in the (scaled) units of its targets, with no output
activation. ``spec`` gives the window shape (``lookback``, ``n_features``, ``horizon``); ``train``
is the typed train config, of which the builders read:

- ``units``: hidden size of every recurrent layer (and the attention's model width);
- ``layers``: number of stacked recurrent layers;
- ``dropout``: rate of the dropout between stacked recurrent layers and before the output layer;
- ``heads``: attention heads (``build_attention`` only; must divide ``units``).

The initialisation is Keras': Glorot-uniform input kernels, orthogonal recurrent kernels, zero
biases with the LSTM's forget-gate bias at 1, Glorot-uniform dense kernels, and the attention's
projections drawn with the limits Keras' ``MultiHeadAttention`` uses. Parameter counts equal the
Keras models' (the tests check them).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from curriculum.models.torch_init import glorot_init_


class KerasLSTM(nn.Module):
    """One LSTM layer as Keras writes it: a single bias per gate, so its parameter count is Keras'.

    ``nn.LSTM`` carries two bias vectors (``b_ih`` and ``b_hh``, 4·units more parameters than
    Keras' LSTM); this layer computes the same cell with one. Gates in the order i, f, g, o
    (Keras' and torch's order), sigmoid gates and tanh cell, as Keras 3's defaults.
    The input projection of all time steps is one matrix product; only the recurrence loops.
    Takes ``(batch, time, features)`` and returns every step's hidden state ``(batch, time, units)``.
    """

    def __init__(self, input_size: int, units: int):
        super().__init__()
        self.units = units
        self.input_kernel = nn.Linear(input_size, 4 * units)  # Keras' kernel + bias
        self.recurrent_kernel = nn.Linear(units, 4 * units, bias=False)
        nn.init.xavier_uniform_(self.input_kernel.weight)
        nn.init.orthogonal_(self.recurrent_kernel.weight)
        with torch.no_grad():
            self.input_kernel.bias.zero_()
            self.input_kernel.bias[units : 2 * units] = 1.0  # unit_forget_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.input_kernel(x)
        h = x.new_zeros((x.shape[0], self.units))
        c = x.new_zeros((x.shape[0], self.units))
        outputs = []
        for t in range(x.shape[1]):
            gates = projected[:, t] + self.recurrent_kernel(h)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class KerasGRU(nn.Module):
    """One GRU layer: ``nn.GRU`` is Keras' GRU with ``reset_after=True`` (its default), two bias
    vectors included, so the cell and the parameter count already agree. Keras' initialisation."""

    def __init__(self, input_size: int, units: int):
        super().__init__()
        self.gru = nn.GRU(input_size, units, batch_first=True)
        nn.init.xavier_uniform_(self.gru.weight_ih_l0)
        nn.init.orthogonal_(self.gru.weight_hh_l0)
        nn.init.zeros_(self.gru.bias_ih_l0)
        nn.init.zeros_(self.gru.bias_hh_l0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


def _recurrent_stack(cell: type[nn.Module], n_features: int, train: Any) -> nn.Sequential:
    """``layers`` recurrent layers, dropout between them (as the Keras stack's Dropout layers)."""
    stack: list[nn.Module] = []
    for index in range(train.layers):
        if index:
            stack.append(nn.Dropout(train.dropout))
        stack.append(cell(n_features if index == 0 else train.units, train.units))
    return nn.Sequential(*stack)


def _dense(in_features: int, out_features: int) -> nn.Linear:
    return glorot_init_(nn.Linear(in_features, out_features))


class RecurrentForecaster(nn.Module):
    """Recurrent stack -> last step's hidden state -> dropout -> Linear(horizon)."""

    def __init__(self, cell: type[nn.Module], spec: Mapping[str, Any], train: Any):
        super().__init__()
        self.recurrent = _recurrent_stack(cell, spec["n_features"], train)
        self.dropout = nn.Dropout(train.dropout)
        self.head = _dense(train.units, spec["horizon"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.recurrent(x)[:, -1]))


class AttentionForecaster(nn.Module):
    """LSTM encoder; the last step's state attends over every step's state (multi-head,
    scaled dot product); [context, last state] -> dropout -> Linear(horizon)."""

    def __init__(self, spec: Mapping[str, Any], train: Any):
        super().__init__()
        units, heads = train.units, train.heads
        if units % heads:
            raise ValueError(f"heads ({heads}) must divide units ({units})")
        self.encoder = _recurrent_stack(KerasLSTM, spec["n_features"], train)
        self.attention = nn.MultiheadAttention(units, heads, batch_first=True)
        _keras_attention_init_(self.attention, heads)
        self.dropout = nn.Dropout(train.dropout)
        self.head = _dense(2 * units, spec["horizon"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = self.encoder(x)
        last = states[:, -1:]
        context, _ = self.attention(last, states, states, need_weights=False)
        return self.head(self.dropout(torch.cat([context[:, 0], last[:, 0]], dim=-1)))


def _keras_attention_init_(attention: nn.MultiheadAttention, heads: int) -> None:
    """Uniform limits of Keras' ``MultiHeadAttention`` (Glorot on its 3-d einsum kernels), zero biases.

    Keras' query/key/value kernels are (units, heads, key_dim): fan_in = heads·units,
    fan_out = key_dim·units; its output kernel (heads, key_dim, units): fan_in = key_dim·heads,
    fan_out = units·heads.
    """
    units = attention.embed_dim
    key_dim = units // heads
    projection_limit = math.sqrt(6.0 / (heads * units + key_dim * units))
    output_limit = math.sqrt(6.0 / (key_dim * heads + units * heads))
    with torch.no_grad():
        attention.in_proj_weight.uniform_(-projection_limit, projection_limit)
        attention.in_proj_bias.zero_()
        attention.out_proj.weight.uniform_(-output_limit, output_limit)
        attention.out_proj.bias.zero_()


def build_lstm(spec: Mapping[str, Any], train: Any) -> nn.Module:
    """``layers`` × LSTM(``units``) -> dropout -> Linear(horizon); returns raw forecasts."""
    return RecurrentForecaster(KerasLSTM, spec, train)


def build_gru(spec: Mapping[str, Any], train: Any) -> nn.Module:
    """``layers`` × GRU(``units``) -> dropout -> Linear(horizon); returns raw forecasts."""
    return RecurrentForecaster(KerasGRU, spec, train)


def build_attention(spec: Mapping[str, Any], train: Any) -> nn.Module:
    """LSTM encoder + ``heads``-head attention from the last step over all steps -> Linear(horizon)."""
    return AttentionForecaster(spec, train)
