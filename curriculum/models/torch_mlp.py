"""The curriculum's simple feed-forward binary classifier in native PyTorch."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from curriculum.models.torch_init import glorot_init_


def build_mlp(spec: Mapping[str, Any], train: Any) -> nn.Module:
    """Linear(inputs, hidden_units) -> ReLU -> Linear(hidden_units, n_outputs); returns logits.

    The sigmoid lives in the loss (``BCEWithLogitsLoss``) and in the exported graph (the torch
    task's head, which the torch back end appends), not in the module. Glorot-uniform weights, zero biases.
    """
    (n_inputs,) = spec["input_shape"]
    hidden = train.hidden_units
    model = nn.Sequential(nn.Linear(n_inputs, hidden), nn.ReLU(), nn.Linear(hidden, spec["n_outputs"]))
    return glorot_init_(model)
