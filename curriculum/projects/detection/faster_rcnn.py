"""Faster R-CNN (torchvision) on ImageNet MobileNetV2 with an FPN over mid-level features.

Why these choices: tree crowns are small (about 20-80 px on a 400 px tile), so the pyramid is
taken from MobileNetV2's stride-4/8/16 blocks (``features.3``, ``.6``, ``.13``) rather than its
stride-32 end, and each level gets one anchor size matched to its stride. The backbone's batch
norms are frozen (``FrozenBatchNorm2d``): batches of a few tiles cannot estimate statistics, and
frozen statistics make the training and evaluation forward passes the same. Images are never
resized (the transform's fixed size is the tile size) and are normalised with ImageNet mean/std
inside the model, so callers pass raw uint8 NHWC tiles. Proposal and RoI counts are cut down
from torchvision's defaults for CPU speed.

``weights_backbone=None`` everywhere: every weight comes from the pinned state dict passed in, so
nothing is downloaded. A torch-only module: it imports torch at module level.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# MobileNetV2 block -> (FPN level name, its channels); strides 4, 8, 16. The FPN's LastLevelMaxPool
# adds a stride-32 level ("pool") that the RPN uses and the RoI pooling does not.
FPN_LEVELS = {"3": ("0", 24), "6": ("1", 32), "13": ("2", 96)}
ANCHOR_SIZES = ((16,), (32,), (64,), (128,))  # one size per level, pool level included
ASPECT_RATIOS = (0.5, 1.0, 2.0)
FPN_CHANNELS = 64
HEAD_WIDTH = 256  # the box head's two fully connected layers (torchvision: 1024)
FROZEN_BLOCKS = 2  # features.0-1 (stride 2) keep their ImageNet weights


def detector(n_classes: int, image_size: int, max_detections: int,
             state_dict: Mapping[str, Any]) -> torch.nn.Module:
    """torchvision ``FasterRCNN`` with the recipe above, its backbone loaded from ``state_dict``."""
    mobilenet = torchvision.models.mobilenet_v2(weights=None, norm_layer=FrozenBatchNorm2d)
    mobilenet.load_state_dict({name: torch.as_tensor(np.asarray(value)) for name, value in state_dict.items()})
    last = max(int(block) for block in FPN_LEVELS)
    features = mobilenet.features[:last + 1]  # slicing keeps the block names "0".."last"
    for block in features[:FROZEN_BLOCKS]:
        block.requires_grad_(False)
    backbone = BackboneWithFPN(
        features, return_layers={block: name for block, (name, _) in FPN_LEVELS.items()},
        in_channels_list=[channels for _, channels in FPN_LEVELS.values()], out_channels=FPN_CHANNELS)
    level_names = [name for name, _ in FPN_LEVELS.values()]
    return FasterRCNN(
        backbone,
        min_size=image_size, max_size=image_size, fixed_size=(image_size, image_size),
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
        rpn_anchor_generator=AnchorGenerator(ANCHOR_SIZES, (ASPECT_RATIOS,) * len(ANCHOR_SIZES)),
        rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300,
        rpn_batch_size_per_image=256,
        box_roi_pool=MultiScaleRoIAlign(level_names, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(FPN_CHANNELS * 7 * 7, HEAD_WIDTH),
        box_predictor=FastRCNNPredictor(HEAD_WIDTH, n_classes + 1),  # torchvision's class 0: background
        box_batch_size_per_image=128, box_score_thresh=0.01, box_detections_per_img=max_detections,
    )


def build_torch(spec: Mapping[str, Any], train: Any, weights: Mapping[str, Any]) -> torch.nn.Module:
    """The contract's builder: reads ``spec`` image_size/n_classes/seed and ``train.max_detections``."""
    torch.manual_seed(spec["seed"])  # the heads' initialisation
    return FasterRCNNDetector(detector(spec["n_classes"], spec["image_size"], train.max_detections, weights),
                              train.max_detections)


class FasterRCNNDetector(torch.nn.Module):
    """uint8 NHWC in; losses (with targets) or padded detections (without) out, per the contract."""

    takes_targets = True  # the training loop passes the targets: torchvision computes its own losses
    export_batch = 1  # torchvision loops over a batch's images: a traced graph keeps the traced count
    exports_program = False  # torch.export cannot bound NMS's data-dependent box count: ONNX is the export

    def __init__(self, model: torch.nn.Module, max_detections: int):
        super().__init__()
        self.model = model
        self.max_detections = max_detections

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        images = list(x.permute(0, 3, 1, 2).float() / 255.0)
        if targets is None:
            return self._detect(images)
        return self._losses(images, targets)

    def _losses(self, images: list[torch.Tensor], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """torchvision's four losses, in train or eval mode alike.

        The RPN and RoI heads compute losses only while ``training``, so they are switched on
        for this call; they hold no batch norm or dropout, and the backbone's batch norms are
        frozen, so an eval-mode call changes no state and differs only by the heads' sampling.
        """
        wanted = [{"boxes": t[t[:, 4] >= 0, :4], "labels": t[t[:, 4] >= 0, 4].long() + 1} for t in targets]
        model = self.model
        batch, wanted = model.transform(images, wanted)
        features = model.backbone(batch.tensors)
        modes = model.rpn.training, model.roi_heads.training
        model.rpn.train(True)
        model.roi_heads.train(True)
        try:
            proposals, rpn = model.rpn(batch, features, wanted)
            _, roi = model.roi_heads(features, proposals, batch.image_sizes, wanted)
        finally:
            model.rpn.train(modes[0])
            model.roi_heads.train(modes[1])
        return {"objectness": rpn["loss_objectness"], "box_rpn": rpn["loss_rpn_box_reg"],
                "classifier": roi["loss_classifier"], "box_roi": roi["loss_box_reg"]}

    def _detect(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boxes (B, K, 4), scores (B, K), labels (B, K), padded with 0, 0, -1.

        torchvision returns at most K detections per image, sorted by score; appending K
        padding rows and keeping the first K pads without shape arithmetic, so it traces.
        """
        if self.training:
            raise RuntimeError("detections need eval mode; pass targets for the training losses")
        k = self.max_detections
        boxes, scores, labels = [], [], []
        for found in self.model(images):
            boxes.append(torch.cat([found["boxes"], found["boxes"].new_zeros(k, 4)])[:k])
            scores.append(torch.cat([found["scores"], found["scores"].new_zeros(k)])[:k])
            labels.append(torch.cat([found["labels"] - 1, found["labels"].new_full((k,), -1)])[:k])
        return torch.stack(boxes), torch.stack(scores), torch.stack(labels)
