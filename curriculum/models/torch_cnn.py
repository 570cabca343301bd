"""The curriculum's small CNN in native PyTorch, layer for layer the Keras one."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from curriculum.models.torch_init import glorot_init_


def _conv_out(size: int) -> int:
    """Spatial size after conv3x3 (valid) + 2x2 max-pool, as Keras computes it."""
    return (size - 2) // 2


class ChannelsFirst(nn.Module):
    """NHWC (the pipeline's and Keras' image layout) to the NCHW torch's convolutions expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2).contiguous()


def build_small_cnn(spec: Mapping[str, Any], train: Any) -> nn.Module:
    """Same stack as ``keras_cnn.build_small_cnn``; takes NHWC images, as Keras does, and returns logits.

    The softmax lives in the loss (and in the exported graph), not in the module.
    ``spec["input_shape"]`` is the Keras-style (height, width, channels).
    """
    height, width, channels = spec["input_shape"]

    def conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
        if not train.batch_norm:
            return [nn.Conv2d(in_channels, out_channels, 3), nn.ReLU()]
        return [nn.Conv2d(in_channels, out_channels, 3, bias=False), nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.01), nn.ReLU()]

    final_height, final_width = _conv_out(_conv_out(height)) - 2, _conv_out(_conv_out(width)) - 2
    model = nn.Sequential(
        ChannelsFirst(),
        *conv_block(channels, 32),
        nn.MaxPool2d(2),
        *conv_block(32, 64),
        nn.MaxPool2d(2),
        *conv_block(64, 64),
        nn.Flatten(),
        nn.Linear(64 * final_height * final_width, 64),
        nn.ReLU(),
        nn.Dropout(train.dropout),
        nn.Linear(64, spec["n_outputs"]),
    )
    return glorot_init_(model)
