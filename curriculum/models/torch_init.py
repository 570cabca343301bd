"""Keras-style initialisation for torch modules, so both frameworks start alike."""
from __future__ import annotations

from torch import nn


def glorot_init_(model: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases (Keras' defaults) for every conv and linear layer."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
