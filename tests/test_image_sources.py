"""The transfer-learning image sources: .deb reading, Fashion-MNIST from Debian, the user's ImageFolder.

Packages are built here in pure Python (an ``ar`` archive around ``tar`` members) and served by the
local HTTP server of tests/test_download.py; only the ``slow`` test reaches deb.debian.org.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile

import numpy as np
import pytest
from PIL import Image

from curriculum.debian import list_deb_files, read_deb_member, read_deb_members
from curriculum.download import DownloadError, RemoteFile
from curriculum.fashion_mnist import (
    CLASS_NAMES, DEB_DIR, IDX_FILES, fashion_mnist_arrays, fetch_fashion_mnist,
)
from curriculum.image_folder import ImageFolderError, fetch_image_folder, load_image, scan_image_folder
from tests.test_download import _idx_gz, server  # noqa: F401 -- server: the local HTTP server fixture

COPYRIGHT = b"Files: *\nLicense: MIT\n"


def _tar(entries: dict[str, bytes | str | None], compression: str = "xz") -> bytes:
    """A tar archive: bytes -> a regular file, str -> a symlink to it, None -> a directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
            else:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if isinstance(content, bytes) else None)
    return buffer.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    """An ``ar`` archive as dpkg-deb writes it: 60-byte headers, members padded to even sizes."""
    out = [b"!<arch>\n"]
    for name, content in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode()
        out += [header, content, b"\n" * (len(content) % 2)]
    return b"".join(out)


def _deb(files: dict[str, bytes | str | None], data_member: str = "data.tar.xz", version: bytes = b"2.0\n") -> bytes:
    compression = {"data.tar": "", "data.tar.gz": "gz", "data.tar.bz2": "bz2"}.get(data_member, "xz")
    control = _tar({"./control": b"Package: test\n"})
    return _ar({"debian-binary": version, "control.tar.xz": control, data_member: _tar(files, compression)})


def _write(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


PACKAGE = {
    "./": None, "./usr/": None, "./usr/share/": None, "./usr/share/doc/": None, "./usr/share/doc/test/": None,
    "./usr/share/doc/test/copyright": COPYRIGHT,
    "./usr/share/doc/test/odd": b"odd-sized",
    "./usr/share/doc/test/link": "copyright",
}


# --- curriculum.debian ---------------------------------------------------------------------


@pytest.mark.parametrize("data_member", ["data.tar.xz", "data.tar.gz", "data.tar.bz2", "data.tar"])
def test_deb_files_are_listed_and_read_without_dpkg(tmp_path, data_member):
    deb = _write(tmp_path, "test.deb", _deb(PACKAGE, data_member))
    assert list_deb_files(deb) == ["usr/share/doc/test/copyright", "usr/share/doc/test/odd"]
    assert read_deb_member(deb, "usr/share/doc/test/copyright") == COPYRIGHT
    asked = ["./usr/share/doc/test/odd", "usr/share/doc/test/copyright"]
    assert read_deb_members(deb, asked) == {asked[0]: b"odd-sized", asked[1]: COPYRIGHT}


def test_deb_reader_refuses_links_unsafe_names_and_missing_members(tmp_path):
    deb = _write(tmp_path, "test.deb", _deb(PACKAGE))
    link = r"test\.deb \(data\.tar\.xz\): member 'usr/share/doc/test/link' is a link to 'copyright'"
    with pytest.raises(DownloadError, match=link):
        read_deb_member(deb, "usr/share/doc/test/link")
    with pytest.raises(DownloadError, match="is not a regular file"):
        read_deb_member(deb, "usr/share/doc/test")
    missing = r"no member 'usr/share/doc/test/copyrite'; similar names: \['usr/share/doc/test/copyright'"
    with pytest.raises(DownloadError, match=missing):
        read_deb_member(deb, "usr/share/doc/test/copyrite")
    for unsafe in ("./usr/../../etc/passwd", "/etc/passwd"):
        evil = _write(tmp_path, "evil.deb", _deb({**PACKAGE, unsafe: b"root:x:0:0"}))
        with pytest.raises(DownloadError, match=f"evil.deb .*refused member '{unsafe}'"):
            read_deb_member(evil, "usr/share/doc/test/copyright")  # refused whatever is asked for
        with pytest.raises(DownloadError, match="refused member"):
            list_deb_files(evil)


def test_deb_reader_names_the_package_when_it_is_not_a_readable_deb(tmp_path):
    good = _deb(PACKAGE)
    cases = {
        "not-ar.deb": (b"PK\x03\x04 a zip", "not a Debian package"),
        "truncated.deb": (good[:-100], "member 'data.tar.xz' is truncated"),
        "no-version.deb": (_ar({"control.tar.xz": b""}), "no debian-binary member"),
        "version-3.deb": (_deb(PACKAGE, version=b"3.0\n"), r"unsupported Debian package format b'3\.0\\n'"),
        "zstd.deb": (_ar({"debian-binary": b"2.0\n", "data.tar.zst": b"(\xb5/\xfd"}), r"cannot read data\.tar\.zst \(zstd"),
        "no-data.deb": (_ar({"debian-binary": b"2.0\n"}), "expected one data.tar.* member, found none"),
        "corrupt.deb": (good[:-200] + b"\0" * 200, r"corrupt\.deb \(data\.tar\.xz\): not a readable tar archive"),
    }
    for name, (content, message) in cases.items():
        with pytest.raises(DownloadError, match=message):
            list_deb_files(_write(tmp_path, name, content))


# --- curriculum.fashion_mnist --------------------------------------------------------------


def _fashion_idx(n_train: int = 60_000, n_test: int = 10_000) -> dict[str, np.ndarray]:
    """IDX arrays of Fashion-MNIST's shapes: image i is filled with i % 251, its label is i % 10."""
    def images(n: int) -> np.ndarray:
        return np.broadcast_to((np.arange(n) % 251).astype(np.uint8)[:, None, None], (n, 28, 28))
    return {"x": images(n_train), "y": np.arange(n_train) % 10,
            "x_test": images(n_test), "y_test": np.arange(n_test) % 10}


def _serve_deb(server, idx: dict[str, np.ndarray]) -> RemoteFile:
    files = {f"./{DEB_DIR}{IDX_FILES[key]}": _idx_gz(array) for key, array in idx.items()}
    body = _deb({f"./{DEB_DIR}": None, **files})
    server.files["/fashion.deb"] = body
    sha256 = hashlib.sha256(body).hexdigest()
    return RemoteFile(f"{server.url}/fashion.deb", "fashion.deb", sha256=sha256, size=len(body))


def test_fashion_mnist_is_downloaded_verified_and_read_from_the_package(server, tmp_path):
    """A package of Fashion-MNIST's layout and counts (generated pixels) through the real fetch path."""
    deb = _serve_deb(server, _fashion_idx())
    work, partial = tmp_path / "work", tmp_path / "partial"
    raw = fetch_fashion_mnist(work, partial, deb=deb)
    assert raw["x"].shape == (60_000, 28, 28, 1) and raw["x"].dtype == np.uint8
    assert raw["x_test"].shape == (10_000, 28, 28, 1)
    assert raw["x"][300, 5, 7, 0] == 300 % 251 and raw["x_test"][9_999, 0, 0, 0] == 9_999 % 251
    assert raw["y"].dtype == np.int64 and raw["y"][:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert raw["class_names"].tolist() == CLASS_NAMES
    assert sorted(p.name for p in work.iterdir()) == ["fashion.deb"]  # the IDX files were temporary

    fetch_fashion_mnist(work, partial, deb=deb)
    assert len(server.requests) == 1  # the verified package is reused


def test_fashion_mnist_counts_and_labels_are_checked():
    source = "test.deb"
    few = r"test\.deb: train-images-idx3-ubyte\.gz: expected 60,000 images of 28x28, got shape \(6, 28, 28\)"
    with pytest.raises(ValueError, match=few):
        fashion_mnist_arrays(_fashion_idx(6, 10_000), source)
    idx = _fashion_idx(60_000, 10_000)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: expected 10,000 labels, got shape \(9999,\)"):
        fashion_mnist_arrays({**idx, "y_test": idx["y_test"][:-1]}, source)
    labels = idx["y"].copy()
    labels[5] = 10
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: label 10 is not a class \(0-9\)"):
        fashion_mnist_arrays({**idx, "y": labels}, source)


@pytest.mark.slow
def test_real_fashion_mnist_from_debian(tmp_path):
    """The real package from deb.debian.org (30.9 MB): the published counts and balanced classes."""
    raw = fetch_fashion_mnist(tmp_path / "work", tmp_path / "partial")
    assert raw["x"].shape == (60_000, 28, 28, 1) and raw["x_test"].shape == (10_000, 28, 28, 1)
    assert np.bincount(raw["y"]).tolist() == [6_000] * 10
    assert np.bincount(raw["y_test"]).tolist() == [1_000] * 10
    assert raw["y"][:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # Zalando's first ten training labels
    assert raw["x"].min() == 0 and raw["x"].max() == 255


# --- curriculum.image_folder ---------------------------------------------------------------


def _image(path, colour, size=(12, 8), mode="RGB", **save):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, **save)


def _folder(root):
    """Two classes; PNGs in four modes, JPEGs (one upper-case), a nested folder, files to skip."""
    _image(root / "dog" / "b.png", (0, 0, 255))
    _image(root / "dog" / "a.JPG", (255, 0, 0), format="JPEG", quality=100)
    _image(root / "dog" / "puppies" / "c.jpeg", (0, 255, 0), format="JPEG", quality=100)
    _image(root / "cat" / "grey.png", 200, mode="L")
    _image(root / "cat" / "rgba.png", (10, 20, 30, 0), mode="RGBA")
    _image(root / "cat" / "palette.png", 7, mode="P")
    (root / "cat" / ".DS_Store").write_bytes(b"\0")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "README.txt").write_text("my photos")


def test_image_folder_reads_classes_in_sorted_order(tmp_path):
    _folder(tmp_path)
    raw = fetch_image_folder(tmp_path, image_size=(4, 6), channels=3)
    assert raw["class_names"].tolist() == ["cat", "dog"]
    assert raw["files"].tolist() == ["cat/grey.png", "cat/palette.png", "cat/rgba.png",
                                     "dog/a.JPG", "dog/b.png", "dog/puppies/c.jpeg"]
    assert raw["y"].dtype == np.int64 and raw["y"].tolist() == [0, 0, 0, 1, 1, 1]
    assert raw["x"].shape == (6, 4, 6, 3) and raw["x"].dtype == np.uint8
    assert raw["x"][0].reshape(-1, 3).tolist() == [[200, 200, 200]] * 24  # grey -> RGB
    assert raw["x"][2, 0, 0].tolist() == [10, 20, 30]  # alpha dropped
    assert np.abs(raw["x"][3].astype(int) - [255, 0, 0]).max() <= 2  # JPEG, nearly exact
    assert raw["x"][4, 0, 0].tolist() == [0, 0, 255]
    grey = fetch_image_folder(tmp_path, image_size=(3, 3), channels=1)
    assert grey["x"].shape == (6, 3, 3, 1) and grey["x"][0, 1, 1, 0] == 200


def test_image_is_resized_bilinear_and_turned_upright_by_exif(tmp_path):
    left_dark = np.zeros((10, 20), dtype=np.uint8)
    left_dark[:, 10:] = 255
    path = tmp_path / "wide.png"
    Image.fromarray(left_dark).save(path)
    resized = load_image(path, (5, 10), channels=1)[..., 0]
    assert resized.shape == (5, 10) and (resized[:, 0] == 0).all() and (resized[:, -1] == 255).all()
    assert 0 < resized[0, 4] < 255 or 0 < resized[0, 5] < 255  # the bilinear filter blends at the edge

    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned, show the image rotated 90 degrees clockwise
    Image.fromarray(left_dark).save(rotated, exif=exif, quality=100)
    upright = load_image(rotated, (20, 10), channels=1)[..., 0]  # tall once upright
    assert upright[:5].mean() < 20 and upright[-5:].mean() > 235  # the dark half is now on top


def test_image_folder_errors_name_the_problem(tmp_path):
    cases = []
    cases.append((tmp_path / "missing", "missing: no such folder"))
    (empty_root := tmp_path / "empty").mkdir()
    (empty_root / "notes.txt").write_text("no classes")
    cases.append((empty_root, "no class folders"))
    _folder(no_images := tmp_path / "no_images")
    (no_images / "bird" / ".hidden").mkdir(parents=True)
    cases.append((no_images, r"class folders without images: \['bird'\]"))
    _folder(others := tmp_path / "others")
    for name in ("dog/IMG_1.heic", "cat/x.webp"):
        (others / name).write_bytes(b"")
    cases.append((others, r"2 file\(s\) \(cat/x\.webp, dog/IMG_1\.heic\) not \.jpeg, \.jpg, \.png images"))
    _folder(corrupt := tmp_path / "corrupt")
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(noise, "PNG")
    (corrupt / "dog" / "b.png").write_bytes(noise.getvalue()[:1500])  # cut inside the pixel data
    (corrupt / "cat" / "fake.jpg").write_text("not a jpeg")
    unreadable = r"2 file\(s\) \(cat/fake\.jpg \(cannot identify .*\), dog/b\.png \(image file is truncated\)\) cannot be read"
    cases.append((corrupt, unreadable))
    for root, message in cases:
        with pytest.raises(ImageFolderError, match=message):
            fetch_image_folder(root, image_size=(4, 4), channels=3)


def test_image_folder_symlinks_are_followed_only_to_files_inside_it(tmp_path):
    outside = tmp_path / "outside.png"
    _image(outside, (1, 2, 3))
    root = tmp_path / "root"
    _folder(root)
    os.symlink("../cat/grey.png", root / "dog" / "also_grey.png")
    assert "dog/also_grey.png" in dict(scan_image_folder(root)[1])
    escaping = root / "dog" / "outside.png"
    os.symlink(outside, escaping)
    with pytest.raises(ImageFolderError, match=re.escape(f"{escaping}: symlink to {outside}, outside")):
        scan_image_folder(root)
    escaping.unlink()
    os.symlink(root / "cat", root / "kitten")
    with pytest.raises(ImageFolderError, match="kitten: symlink to a folder"):
        scan_image_folder(root)
    (root / "kitten").unlink()
    os.symlink(root / "gone.png", root / "cat" / "broken.png")
    with pytest.raises(ImageFolderError, match="broken.png: broken symlink"):
        scan_image_folder(root)
