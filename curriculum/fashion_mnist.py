"""Fashion-MNIST (Zalando: 60,000 + 10,000 grey 28x28 clothing images, 10 classes) from Debian.

Debian's ``dataset-fashion-mnist`` package ships the full set as IDX gz files. The .deb is fetched
with the verified, resumable downloader and pinned by its own sha256 and size: Debian recompressed
the gz files, so Zalando's published md5s do not apply to them, while the package's checksum pins
every image and label. The four files are read out of the package in Python (no dpkg, no apt).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from curriculum.debian import read_deb_members
from curriculum.download import RemoteFile, download
from curriculum.layout import Arrays
from curriculum.projects.image_classification import read_idx

FASHION_MNIST_DEB = RemoteFile(
    "http://deb.debian.org/debian/pool/main/d/dataset-fashion-mnist/"
    "dataset-fashion-mnist_0.0%7Egit20200523.55506a9-1_all.deb",
    "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
    sha256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
    size=30_900_652,
)
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEB_DIR = "usr/share/datasets/fashion-mnist/"
IDX_FILES = {
    "x": "train-images-idx3-ubyte.gz", "y": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz",
}
IMAGE_COUNTS = {"x": 60_000, "x_test": 10_000}


def fetch_fashion_mnist(work_dir: Path, partial_dir: Path, deb: RemoteFile = FASHION_MNIST_DEB) -> Arrays:
    """Full Fashion-MNIST as the image sources return it: ``x`` uint8 (N, 28, 28, 1), ``y`` int64."""
    work_dir = Path(work_dir)
    deb_path = download(deb, work_dir, partial_dir)
    contents = read_deb_members(deb_path, [DEB_DIR + name for name in IDX_FILES.values()])
    with tempfile.TemporaryDirectory(prefix=".fashion-mnist-", dir=work_dir) as tmp:  # read_idx reads a file
        idx = {}
        for key, name in IDX_FILES.items():
            path = Path(tmp) / name
            path.write_bytes(contents[DEB_DIR + name])
            idx[key] = read_idx(path)
    return fashion_mnist_arrays(idx, source=deb_path.name)


def fashion_mnist_arrays(idx: dict[str, np.ndarray], source: str) -> Arrays:
    """Check the parsed IDX arrays against Fashion-MNIST's published counts, shapes and labels."""
    for images, labels in (("x", "y"), ("x_test", "y_test")):
        x, y = idx[images], idx[labels]
        images_file, labels_file = f"{source}: {IDX_FILES[images]}", f"{source}: {IDX_FILES[labels]}"
        if x.shape != (IMAGE_COUNTS[images], 28, 28):
            raise ValueError(f"{images_file}: expected {IMAGE_COUNTS[images]:,} images of 28x28, got shape {x.shape}")
        if y.shape != (len(x),):
            raise ValueError(f"{labels_file}: expected {len(x):,} labels, got shape {y.shape}")
        if y.max() >= len(CLASS_NAMES):
            raise ValueError(f"{labels_file}: label {y.max()} is not a class (0-{len(CLASS_NAMES) - 1})")
    return {
        "x": idx["x"][..., None], "y": idx["y"].astype(np.int64),
        "x_test": idx["x_test"][..., None], "y_test": idx["y_test"].astype(np.int64),
        "class_names": np.array(CLASS_NAMES),
    }
