"""The user's own labelled images, in the ImageFolder layout: ``root/<class name>/<image>``.

The layout Keras's ``image_dataset_from_directory`` and torchvision's ``ImageFolder`` read, with
stricter rules, because a silently skipped file is a silently smaller class:

* each folder directly under ``root`` is a class; classes are numbered in sorted name order;
* inside a class folder, images (``.jpg``, ``.jpeg``, ``.png``, any case) are collected from every
  sub-folder, in sorted path order; any other file is refused (a phone's ``.heic`` or a ``.webp``
  would otherwise vanish without a word), as is a class folder without images;
* names starting with ``.`` are skipped everywhere (``.DS_Store``, ``._x.jpg``, ``.ipynb_checkpoints``),
  and so are plain files directly under ``root`` (a README or LICENSE beside the classes);
* a symlink is followed only to a file inside ``root``: a link leading outside it, a broken link and
  a link to a folder (which could loop or count images twice) are refused;
* every image is decoded in full, so a truncated or corrupt file fails here, by name, not mid-training.

Each image is turned upright by its EXIF orientation (as a photo viewer shows it; Keras and
torchvision ignore the tag), converted to grey (``L``) or ``RGB`` (alpha is dropped), and resized to
``image_size`` without keeping the aspect ratio (as Keras does by default) with Pillow's bilinear
filter, which averages the whole source footprint when shrinking (antialiased, like torchvision's
``Resize`` on PIL images; ``tf.image.resize``'s default bilinear is not antialiased).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from curriculum.layout import Arrays

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
RESAMPLING = Image.Resampling.BILINEAR
MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode
MAX_LISTED = 10  # offending files named in one error message


class ImageFolderError(ValueError):
    """The folder does not follow the layout, or one of its images cannot be read."""


def fetch_image_folder(root: Path, image_size: tuple[int, int], channels: int) -> Arrays:
    """All images under ``root``: ``x`` uint8 (N, height, width, channels), ``y`` int64 class indices,
    ``class_names``, and ``files`` (paths relative to ``root``, so later checks can name them)."""
    height, width = image_size
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be (height, width) of positive sizes, got {image_size}")
    if channels not in MODES:
        raise ValueError(f"channels must be one of {sorted(MODES)}, got {channels}")
    root = Path(root)
    class_names, files = scan_image_folder(root)
    images, unreadable = [], []
    for name, _ in files:
        try:
            images.append(load_image(root / name, image_size, channels))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            unreadable.append(f"{name} ({exc})")
    if unreadable:
        raise ImageFolderError(f"{root}: {_some(unreadable)} cannot be read as images")
    return {
        "x": np.stack(images),
        "y": np.array([label for _, label in files], dtype=np.int64),
        "class_names": np.array(class_names),
        "files": np.array([name for name, _ in files]),
    }


def scan_image_folder(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names (sorted) and every image as (path relative to ``root``, class index); reads no image."""
    root = Path(root)
    if not root.is_dir():
        raise ImageFolderError(f"{root}: no such folder")
    real_root = root.resolve()
    class_dirs = [entry for entry in _entries(root, real_root) if entry.is_dir()]
    if not class_dirs:
        raise ImageFolderError(f"{root}: no class folders (expected {root}/<class name>/<image>.jpg|jpeg|png)")
    files, others = [], []
    for label, class_dir in enumerate(class_dirs):
        for path in _files_under(class_dir, real_root):
            name = path.relative_to(root).as_posix()
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                files.append((name, label))
            else:
                others.append(name)
    if others:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ImageFolderError(f"{root}: {_some(others)} not {suffixes} images; move them out of the class folders")
    labels_found = {label for _, label in files}
    if empty := [class_dir.name for label, class_dir in enumerate(class_dirs) if label not in labels_found]:
        raise ImageFolderError(f"{root}: class folders without images: {empty}")
    return [class_dir.name for class_dir in class_dirs], files


def load_image(path: Path, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file -> uint8 (height, width, channels), upright, converted and resized."""
    height, width = image_size
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image)
        resized = upright.convert(MODES[channels]).resize((width, height), RESAMPLING)
    return np.asarray(resized, dtype=np.uint8).reshape(height, width, channels)


def _files_under(folder: Path, real_root: Path) -> list[Path]:
    """Every non-folder entry under ``folder``, recursively, in sorted path order."""
    found = []
    for entry in _entries(folder, real_root):
        found += _files_under(entry, real_root) if entry.is_dir() else [entry]
    return found


def _entries(folder: Path, real_root: Path) -> list[Path]:
    """``folder``'s entries sorted by name, hidden ones skipped, symlinks checked (see module docs)."""
    entries = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            target = entry.resolve()
            if not target.is_relative_to(real_root):
                raise ImageFolderError(f"{entry}: symlink to {target}, outside {real_root}")
            if not target.exists():
                raise ImageFolderError(f"{entry}: broken symlink (to {target})")
            if target.is_dir():
                raise ImageFolderError(f"{entry}: symlink to a folder ({target}); use a real folder")
        entries.append(entry)
    return entries


def _some(items: list[str]) -> str:
    """``items`` for an error message: the first few and how many in all."""
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"{len(items)} file(s) ({', '.join(items[:MAX_LISTED])}{more})"
