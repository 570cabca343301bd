"""Object detection: a Faster R-CNN and a CenterNet-style one-stage detector on real aerial tree crowns.

Default data: the NEON tree-crown images with Pascal VOC boxes shipped in the deepforest 2.1.0
wheel (fetched as a file, sha256-pinned, never installed): the two Yellowstone images are tiled
for training and validation, the other two sites are the test set. Full-size: Pascal VOC 2007;
any COCO-format JSON too. Both detectors start from the ImageNet MobileNetV2 of the transfer
project (the raw data carries its weights, like the transfer project's).

Modules: ``sources`` (fetching), ``boxes`` (tiling, padding, box-aware augmentation),
``scores`` (mAP, precision/recall), ``baselines`` (classical crown finding), ``task`` (what
the stages ask), ``centernet*`` and ``faster_rcnn`` (the models).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
from pydantic import Field

from curriculum.backbones import mobilenet_v2 as mb
from curriculum.config import (
    DownloadConfig, Fraction, NonNegativeFloat, PositiveInt, ProjectConfig, Section, TrainConfig,
)
from curriculum.layout import Arrays, ProcessedData
from curriculum.projects.base import DataSource, Project
from curriculum.projects.detection import boxes, sources
from curriculum.projects.detection.baselines import detection_baselines
from curriculum.projects.detection.task import Detection

TORCH_WEIGHTS, KERAS_WEIGHTS = "mobilenet_v2_torch", "mobilenet_v2_keras"  # preprocess's fitted artifacts


# --------------------------------------------------------------------------- params


class CocoFiles(Section):
    annotations: str | None  # training COCO JSON
    images: str | None  # the folder its file names are relative to
    test_annotations: str | None  # optional held-out COCO JSON (same image folder)


class DetectionDownload(DownloadConfig):
    # Keep only each image's top-left ``crop`` x ``crop`` window (boxes at least half inside, clipped):
    # the smoke test's tiny slice. null: whole images.
    crop: PositiveInt | None
    coco: CocoFiles


class DetectionValidate(Section):
    min_box_side: NonNegativeFloat  # a box narrower or lower than this (pixels) fails validation


class DetectionPreprocess(Section):
    tile_size: PositiveInt  # square tiles the models take (images smaller than a tile are zero-padded)
    min_inside: Fraction  # a box belongs to a tile when at least this part of its area is inside
    val_fraction: Fraction  # of the training images' tiles, seeded; training tiles overlapping them are dropped


class DetectionTrain(TrainConfig):
    width: PositiveInt  # channels of the one-stage detector's feature pyramid
    max_detections: PositiveInt  # detections kept per image (top-K)
    size_weight: NonNegativeFloat  # CenterNet loss: weight of the box-size L1
    offset_weight: NonNegativeFloat  # CenterNet loss: weight of the sub-pixel offset L1
    colour_jitter: Annotated[float, Field(ge=0, lt=1)]  # brightness/contrast within 1 +/- this per epoch; 0 = off


class DetectionEvaluate(Section):
    plot_images: PositiveInt  # test images drawn with their boxes


class DetectionConfig(ProjectConfig):
    download: DetectionDownload
    validate_: DetectionValidate = Field(alias="validate")  # `validate` is a pydantic method name
    preprocess: DetectionPreprocess
    train: DetectionTrain
    evaluate: DetectionEvaluate


# --------------------------------------------------------------------------- stages


def with_backbone(fetch: Callable[..., Arrays]) -> Callable[..., Arrays]:
    """A source that also stores the backbone's ImageNet weights in the raw data."""
    def fetch_with_backbone(work_dir: Path, partial_dir: Path, **settings: Any) -> Arrays:
        return mb.with_state_dict(fetch(work_dir, partial_dir, **settings), work_dir)
    return fetch_with_backbone


def subsample(raw: Arrays, config: DetectionConfig) -> Arrays:
    """Each image cut to its top-left ``download.crop`` window (the smoke test's slice)."""
    crop = config.download.crop
    if crop is None:
        return raw
    images = mb.without_state_dict(raw)
    cropped, kept = [], []
    for index, image in enumerate(boxes.images(images)):
        window = np.ascontiguousarray(image[:crop, :crop])
        cropped.append(window)
        kept.append(boxes.crop_boxes(boxes.image_boxes(images, index), 0, 0, window.shape[0], window.shape[1], 0.5))
    shapes = np.array([w.shape for w in cropped], dtype=np.int64)
    return {
        **raw,
        "image_shape": shapes, "image_declared": shapes[:, :2].copy(),
        "image_offset": np.cumsum([0] + [w.size for w in cropped[:-1]]).astype(np.int64),
        "image_pixels": np.concatenate([w.ravel() for w in cropped]),
        "box_image": np.concatenate([np.full(len(k), i, np.int64) for i, k in enumerate(kept)]),
        "box": np.concatenate([k[:, :4] for k in kept]).astype(np.float32),
        "box_label": np.concatenate([k[:, 4] for k in kept]).astype(np.int64),
    }


def validation(raw: Arrays, config: DetectionConfig):
    """The box table (one row per box, indexed "<image> box <n>") and the image table, held to
    the box rules and the declared sizes: a failure names the file and the box."""
    import great_expectations.expectations as gxe
    import pandas as pd

    images = mb.without_state_dict(raw)
    names = [str(name) for name in images["image_name"]]
    shape, declared = images["image_shape"], images["image_declared"]
    owner = images["box_image"]
    per_image = np.zeros(len(names), np.int64)
    labels = []
    for i in owner:
        labels.append(f"{names[i]} box {per_image[i]}")
        per_image[i] += 1
    box = images["box"].astype(np.float64)
    box_table = pd.DataFrame({
        "image": [names[i] for i in owner],
        "x_min": box[:, 0], "y_min": box[:, 1], "x_max": box[:, 2], "y_max": box[:, 3],
        "box_width": box[:, 2] - box[:, 0], "box_height": box[:, 3] - box[:, 1],
        "right_margin": shape[owner, 1] - box[:, 2], "bottom_margin": shape[owner, 0] - box[:, 3],
        "label": images["box_label"],
    }, index=labels)
    image_table = pd.DataFrame({
        "height": shape[:, 0], "width": shape[:, 1], "channels": shape[:, 2],
        "declared_height": declared[:, 0], "declared_width": declared[:, 1],
        "role": [str(role) for role in images["image_role"]], "boxes": per_image,
    }, index=names)
    side = config.validate_.min_box_side
    n_classes = len(images["class_names"])
    coordinates = ("x_min", "y_min", "x_max", "y_max")
    expectations = {
        "boxes": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in coordinates],  # a NaN passes range checks
            gxe.ExpectColumnValuesToBeBetween(column="x_min", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="y_min", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="right_margin", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="bottom_margin", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="box_width", min_value=side, strict_min=side == 0),
            gxe.ExpectColumnValuesToBeBetween(column="box_height", min_value=side, strict_min=side == 0),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(n_classes))),
        ],
        "images": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[3]),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="height", column_B="declared_height"),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="width", column_B="declared_width"),
            gxe.ExpectColumnValuesToBeInSet(column="role", value_set=["train", "test"]),
            gxe.ExpectColumnDistinctValuesToContainSet(column="role", value_set=["train", "test"]),
        ],
    }
    return {"boxes": box_table, "images": image_table}, expectations


def split_tiles(tiles: list[boxes.Tile], val_fraction: float, tile: int, seed: int) -> tuple[list, list, int]:
    """A seeded part of the tiles for validation; the rest for training, less those overlapping a
    validation tile (edge-aligned tiles overlap their neighbours), counted as dropped."""
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(val_fraction * len(tiles))))
    val_index = set(rng.choice(len(tiles), size=n_val, replace=False).tolist())
    val = [t for i, t in enumerate(tiles) if i in val_index]
    rest = [t for i, t in enumerate(tiles) if i not in val_index]
    train = [t for t in rest if not any(boxes.overlaps(t, v, tile) for v in val)]
    return train, val, len(rest) - len(train)


def preprocess(raw: Arrays, config: DetectionConfig) -> ProcessedData:
    """Tiles of the training images split into train/val, the test images' tiles, padded boxes, and
    the backbone's weights for both frameworks."""
    settings = config.preprocess
    images = mb.without_state_dict(raw)
    tiles = {"train": [], "test": []}
    for index, image in enumerate(boxes.images(images)):
        role = str(images["image_role"][index])
        tiles[role] += boxes.tile_image(image, boxes.image_boxes(images, index), index, settings.tile_size,
                                        settings.min_inside)
    train, val, dropped = split_tiles(tiles["train"], settings.val_fraction, settings.tile_size, config.seed)
    splits = {
        name: {"x": np.stack([t.pixels for t in part]),
               "y": boxes.pad_boxes([t.boxes for t in part]),
               "origin": np.array([[t.image, t.top, t.left] for t in part], dtype=np.int64)}
        for name, part in (("train", train), ("val", val), ("test", tiles["test"]))
    }
    state_dict = mb.stored_state_dict(raw)
    return ProcessedData(
        splits=splits,
        info={"class_names": [str(name) for name in images["class_names"]],
              "image_names": [str(name) for name in images["image_name"]],
              "tiles": {name: len(part) for name, part in (("train", train), ("val", val), ("test", tiles["test"]))},
              "boxes": {name: int((split["y"][:, :, 4] >= 0).sum()) for name, split in splits.items()},
              "dropped_overlapping_val": dropped,
              "model_spec": {"seed": config.seed}},
        fitted={TORCH_WEIGHTS: state_dict, KERAS_WEIGHTS: mb.port_weights(state_dict)},
    )


def coco_settings(download: DetectionDownload) -> dict[str, Any]:
    return download.coco.model_dump()


DETECTION = "curriculum.projects.detection"
PROJECT = Project(
    name="detection",
    task=Detection(),
    config=DetectionConfig,
    sources={
        "neon_trees": DataSource(
            "real NEON aerial tree-crown images with Pascal VOC boxes (Yellowstone tiles for training, OSBS and "
            "SOAP for test) from the deepforest 2.1.0 wheel (pip download, sha256-verified, not installed)",
            with_backbone(sources.fetch_neon_trees)),
        "voc2007": DataSource("Pascal VOC 2007 trainval + test (9,963 images, 20 classes), downloaded and md5-verified",
                              with_backbone(sources.fetch_voc2007)),
        "coco_json": DataSource("a COCO-format detection JSON and its image folder (download.coco)",
                                with_backbone(sources.fetch_coco_json), coco_settings),
    },
    validation=validation,
    preprocess=preprocess,
    subsample=subsample,
    custom_baselines=detection_baselines,
    models={
        "centernet": {"torch": f"{DETECTION}.centernet_torch:build_torch", "keras": f"{DETECTION}.centernet_keras:build_keras"},
        "faster_rcnn": {"torch": f"{DETECTION}.faster_rcnn:build_torch"},
    },
    pretrained={
        "centernet": {"torch": TORCH_WEIGHTS, "keras": KERAS_WEIGHTS},
        "faster_rcnn": {"torch": TORCH_WEIGHTS},
    },
    heads={"centernet": {"torch": f"{DETECTION}.centernet_torch:torch_decoder",
                         "keras": f"{DETECTION}.centernet_keras:keras_decoder"}},
    # `python -m pipeline experiment detection long`: about 25 minutes of training here
    profiles={"long": {"train.epochs": 80, "variants.centernet-keras.train.epochs": 40,
                       "variants.faster-rcnn-torch.train.epochs": 40}},
    smoke={"download.crop": 256, "preprocess.tile_size": 128, "train.epochs": 2,
           "variants.centernet-keras.train.epochs": 2, "variants.faster-rcnn-torch.train.epochs": 2},
    # The torch one-stage detector's own parts (its net, its decoder head, their export) have unit tests
    # against the Keras twin; these two cover both frameworks, both heads kinds and the fixed-batch export.
    smoke_variants=("centernet-keras", "faster-rcnn-torch"),
)
