"""The CenterNet-style detector in PyTorch (see :mod:`.centernet` for the architecture, targets and
loss): :func:`build_torch` (raw output, or the loss components when given targets) and
:func:`torch_decoder` (raw output -> boxes, scores, labels; exports to ONNX)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from curriculum.backbones import mobilenet_v2 as mb
from curriculum.backbones.imagenet import IMAGENET_MEAN, IMAGENET_STD
from curriculum.backbones.transfer import _tensors
from curriculum.projects.detection import centernet as cn


def _conv_bn_relu(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False),
                         nn.BatchNorm2d(width, eps=cn.BN_EPSILON, momentum=1 - cn.BN_MOMENTUM),
                         nn.ReLU(inplace=True))


def loss_terms(raw: torch.Tensor, dense: torch.Tensor, size_weight: float,
               offset_weight: float) -> dict[str, torch.Tensor]:
    """The weighted loss components of raw outputs (B, C+4, H, W) against dense NHWC targets
    (B, H, W, C+5) from :func:`.centernet.encode_targets`."""
    n_classes = raw.shape[1] - cn.N_BOX_CHANNELS
    target = dense.permute(0, 3, 1, 2).to(raw.dtype)
    heat, gt = raw[:, :n_classes], target[:, :n_classes]
    mask = target[:, -1:]
    n = mask.sum().clamp(min=1.0)
    pos = (gt == 1.0).to(raw.dtype)
    log_p, log_not_p = -F.softplus(-heat), -F.softplus(heat)
    p = torch.sigmoid(heat)
    focal = (pos * (1 - p) ** cn.FOCAL_ALPHA * log_p
             + (1 - pos) * (1 - gt) ** cn.FOCAL_BETA * p ** cn.FOCAL_ALPHA * log_not_p)
    box = (raw[:, n_classes:] - target[:, n_classes:n_classes + cn.N_BOX_CHANNELS]).abs() * mask
    return {"heatmap": -focal.sum() / n,
            "box_size": size_weight * box[:, :2].sum() / (2 * n),
            "box_offset": offset_weight * box[:, 2:].sum() / (2 * n)}


class CenterNet(nn.Module):
    """uint8 NHWC images -> raw output (B, C+4, S/4, S/4); with ``targets`` (padded boxes
    (B, M, 5)) -> ``{"heatmap", "box_size", "box_offset"}`` weighted loss components."""

    takes_targets = True

    def __init__(self, spec: Mapping[str, Any], train: Any, state_dict: Mapping[str, Any]):
        super().__init__()
        cn.check_image_size(int(spec["image_size"]))
        self.image_size, self.n_classes = int(spec["image_size"]), int(spec["n_classes"])
        self.size_weight, self.offset_weight = float(train.size_weight), float(train.offset_weight)
        width = int(train.width)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32).reshape(1, 3, 1, 1) * 255,
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32).reshape(1, 3, 1, 1) * 255,
                             persistent=False)  # constants: not in the state dict
        features = mb.torch_mobilenet_v2(_tensors(state_dict), include_top=True).features
        # torchvision's block numbers, so parameter names are the backbone's (features.13.conv.1.0.weight)
        self.features = nn.Sequential(OrderedDict((str(i), features[i]) for i in range(cn.N_BACKBONE_BLOCKS)))
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1, bias=False) for c in cn.LEVEL_CHANNELS)
        self.smooth = nn.ModuleList(_conv_bn_relu(width) for _ in range(2))
        for head, channels in cn.head_channels(self.n_classes).items():
            setattr(self, head, nn.Sequential(*_conv_bn_relu(width), nn.Conv2d(width, channels, 1)))
        with torch.no_grad():
            for name, weights in cn.initial_weights(spec, train).items():
                conv = self.get_submodule(name)
                conv.weight.copy_(torch.from_numpy(cn.torch_kernel(weights["kernel"])))
                if "bias" in weights:
                    conv.bias.copy_(torch.from_numpy(weights["bias"]))
        self.train()
        # channels-last: oneDNN's depthwise kernels prefer it (measured 1.6x faster in transfer.py)
        self.to(memory_format=torch.channels_last)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.permute(0, 3, 1, 2).to(torch.float32) - self.mean) / self.std
        x = x.contiguous(memory_format=torch.channels_last)
        levels = []
        for start, end in cn.LEVELS:
            for i in range(start, end):
                x = self.features[i](x)
            levels.append(x)
        c4, c8, c16 = levels
        p = self.lateral[2](c16)
        p = self.smooth[1](self.lateral[1](c8) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        p = self.smooth[0](self.lateral[0](c4) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        return torch.cat([self.heatmap(p), self.size(p), self.offset(p)], dim=1)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> Any:
        raw = self.raw(x)
        if targets is None:
            return raw
        dense = cn.encode_targets(targets.detach().cpu().numpy(), self.image_size, self.n_classes)
        return loss_terms(raw, torch.from_numpy(dense).to(raw.device), self.size_weight, self.offset_weight)


def build_torch(spec: Mapping[str, Any], train: Any, weights: Mapping[str, Any]) -> CenterNet:
    """The detector on torchvision's MobileNetV2 state dict ``weights`` (torch tensors or NumPy
    arrays); everything trainable; new layers from :func:`.centernet.initial_weights`."""
    return CenterNet(spec, train, weights)


class CenterNetDecoder(nn.Module):
    """Raw output (B, C+4, H, W) -> boxes (B, K, 4) float32 in input pixels, scores (B, K) float32,
    labels (B, K) int64, sorted by score; padding rows (score 0): box 0, label -1."""

    def __init__(self, image_size: int, n_classes: int, max_detections: int):
        super().__init__()
        self.image_size, self.n_classes = int(image_size), int(n_classes)
        self.candidates, self.k = cn.decoded_size(image_size, n_classes, max_detections)

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.n_classes
        side = cn.output_size(self.image_size)
        cells = side * side
        heat = torch.sigmoid(raw[:, :c])
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
        k = min(self.k, self.candidates)
        scores, index = torch.topk(peaks.reshape(-1, c * cells), k, dim=1)  # class-major index
        labels, cell = index // cells, index % cells
        box = raw[:, c:].reshape(-1, cn.N_BOX_CHANNELS, cells)
        box = torch.gather(box, 2, cell.unsqueeze(1).expand(-1, cn.N_BOX_CHANNELS, -1))  # (B, 4, k)
        size = box[:, :2].clamp(min=0.0) * (cn.STRIDE / 2)
        cx = ((cell % side).to(raw.dtype) + box[:, 2]) * cn.STRIDE
        cy = ((cell // side).to(raw.dtype) + box[:, 3]) * cn.STRIDE
        boxes = torch.stack([cx - size[:, 0], cy - size[:, 1], cx + size[:, 0], cy + size[:, 1]], dim=2)
        boxes = boxes.clamp(0.0, float(self.image_size))
        valid = scores > 0
        boxes = boxes * valid.unsqueeze(2).to(boxes.dtype)
        labels = torch.where(valid, labels, torch.full_like(labels, -1))
        if k < self.k:  # fewer candidates than K: padding rows
            pad = self.k - k
            boxes = F.pad(boxes, (0, 0, 0, pad))
            scores = F.pad(scores, (0, pad))
            labels = F.pad(labels, (0, pad), value=-1)
        return boxes, scores, labels.to(torch.int64)


def torch_decoder(spec: Mapping[str, Any], train: Any) -> CenterNetDecoder:
    return CenterNetDecoder(spec["image_size"], spec["n_classes"], train.max_detections).eval()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

