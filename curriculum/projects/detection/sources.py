"""Where the detection project's images and boxes come from: the only module of it that reads files.

* ``neon_trees`` (the default, offline): the four annotated NEON airborne RGB images that the
  deepforest 2.1.0 wheel ships in ``deepforest/data/`` (tree crowns, Weinstein et al.), read out of
  the pinned wheel fetched as a file from the package index (never installed; its metadata pins
  torch and friends). Two Yellowstone crops (574 + 279 crowns) are the training images, OSBS_029 (61)
  and SOAP_061 (37) the test images. One class, ``Tree``: SOAP_061's ``Alive``/``Dead`` are merged.
* ``voc2007``: the full Pascal VOC 2007 trainval (5,011 images, role train) and test (4,952, role
  test) tars from the Oxford server, md5-pinned, resumable, extracted with tarfile's data filter;
  the 20 VOC classes in the standard order, "difficult" boxes dropped.
* ``coco_json``: the user's own COCO-format detection file(s) and image folder.

Every source returns the raw arrays of the project contract (no object arrays, so they save without
pickle): per image ``image_name``, ``image_role`` ("train"/"test"), ``image_shape`` (height, width, 3
as decoded), ``image_declared`` (height, width as the annotation declares them), ``image_offset``
into ``image_pixels`` (every image's RGB bytes, row-major HWC, concatenated); per box ``box_image``,
``box`` (float32 x_min, y_min, x_max, y_max, 0-based continuous pixel coordinates), ``box_label``
(index into ``class_names``). Boxes are neither clipped nor filtered here: validation checks them.

Pixels are decoded as stored: EXIF orientation is NOT applied, because the annotations' coordinates
refer to the stored pixel grid (as in pycocotools and torchvision's readers).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import xml.parsers.expat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, TreeBuilder

import numpy as np
from PIL import Image

from curriculum.download import DownloadError, RemoteFile, download, fetch_pypi_file, read_archive_member, safe_extract_tar
from curriculum.layout import Arrays

ROLES = ("train", "test")

# --------------------------------------------------------------------------- NEON trees (deepforest wheel)

# sha256 as the package index publishes it for the wheel (and as `pip download --no-deps` fetched), at
# https://files.pythonhosted.org/packages/b7/a8/67e66685c81ec070372db546f933312c6d7401f845e200e5d900107ff51e/
# deepforest-2.1.0-py3-none-any.whl. Each member read is pinned too (NEON_IMAGES).
DEEPFOREST_WHEEL = {
    "package": "deepforest",
    "version": "2.1.0",
    "filename": "deepforest-2.1.0-py3-none-any.whl",
    "sha256": "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54",
}
NEON_DIR = "deepforest/data/"
NEON_CLASS = "Tree"
NEON_LABELS = frozenset({"Tree", "Alive", "Dead"})  # SOAP_061 says Alive/Dead: all are tree crowns


@dataclass(frozen=True)
class NeonImage:
    """One annotated image of the wheel: ``stem.png`` + ``stem.xml`` (paired by stem: OSBS_029.xml's
    ``<filename>`` says .tif), its role, its number of boxes and the members' sha256."""

    stem: str
    role: str
    boxes: int
    png_sha256: str
    xml_sha256: str


NEON_IMAGES = (
    NeonImage("2019_YELL_2_528000_4978000_image_crop2", "train", 574,
              "a9bdb0f4447fdd899d22f567e0e20ba8320c5413b2ad0cd0ac8d9f3b6e0f9767",
              "bd431af6a5086d721eb731b22f5ea28cd8a8eab06883efc1c665391acbc68e11"),
    NeonImage("2019_YELL_2_541000_4977000_image_crop", "train", 279,
              "178e58a23cc2642226a364a30f71bd9258ddc1b012c826f12250914a90c7a131",
              "cefe4b96888bacbf8af1674f000082e549aa707aa6590d545effb23e43f26631"),
    NeonImage("OSBS_029", "test", 61,
              "d9477c6a00e4902c7bee487d4c5582c3b8b9a2f77f3908a29628b816b291e6ee",
              "1f68c4011d7b351c29ca755072e77f3d16e6fd1f995bd05a9dd4eb952b55373c"),
    NeonImage("SOAP_061", "test", 37,
              "256508f1a62149bec4a80879077a865caf50e8cace095e6564c76befa480d424",
              "4833280af75fd9c47965a93e38945282835e9e725cac412bdb9469d63480947c"),
)

# --------------------------------------------------------------------------- Pascal VOC 2007

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/"
VOC_TRAINVAL = RemoteFile(VOC_URL + "VOCtrainval_06-Nov-2007.tar", "VOCtrainval_06-Nov-2007.tar",
                          md5="c52e279531787c972589f7e41ab4ae64")
VOC_TEST = RemoteFile(VOC_URL + "VOCtest_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar",
                      md5="b6e924de25625d8de591ea690078ad9f")
VOC_ROOT = "VOCdevkit/VOC2007"
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


class CocoJsonError(ValueError):
    """A COCO source setting is missing, or the user's JSON or image folder cannot be read as COCO."""


# --------------------------------------------------------------------------- shared: images and VOC XML


@dataclass(frozen=True)
class LabelledImage:
    """One image of a source before packing: its encoded file (a path, or the file's bytes) and its boxes."""

    name: str
    role: str
    image: Path | bytes
    declared: tuple[int, int]  # (height, width) as the annotation declares them
    boxes: np.ndarray  # float32 (k, 4): x_min, y_min, x_max, y_max, 0-based continuous
    labels: np.ndarray  # int64 (k,)


@dataclass(frozen=True)
class VocAnnotation:
    """A parsed Pascal VOC annotation file; ``boxes`` already converted to 0-based continuous pixels."""

    filename: str
    declared: tuple[int, int]  # (height, width) of <size>
    names: list[str]
    boxes: np.ndarray  # float32 (k, 4)
    difficult: np.ndarray  # bool (k,)


def parse_xml(data: bytes, source: str) -> Element:
    """Parse trusted-looking XML with expat, refusing any DTD (so no entity can be declared or expanded).

    What defusedxml guards against (entity expansion bombs, external entities), without the dependency:
    annotation files never need a DOCTYPE.
    """
    builder = TreeBuilder()
    parser = xml.parsers.expat.ParserCreate()

    def refuse(*_args) -> None:
        raise ValueError(f"{source}: XML with a DOCTYPE or entity declaration is refused")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise ValueError(f"{source}: not well-formed XML: {exc}") from None
    return builder.close()


def _text(element: Element, path: str, source: str) -> str:
    found = element.find(path)
    if found is None or not (found.text or "").strip():
        raise ValueError(f"{source}: missing <{path}>")
    return found.text.strip()


def _number(element: Element, path: str, source: str) -> float:
    text = _text(element, path, source)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{source}: <{path}> is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{source}: <{path}> is not finite: {text!r}")
    return value


def parse_voc_xml(data: bytes, source: str) -> VocAnnotation:
    """A Pascal VOC annotation: <filename>, <size> and every <object>'s <name>, <difficult>, <bndbox>.

    VOC boxes are 1-based inclusive pixel indices; they become 0-based continuous coordinates
    (x_min - 1, y_min - 1, x_max, y_max), so a box covering the whole image is (0, 0, width, height).
    """
    root = parse_xml(data, source)
    if root.tag != "annotation":
        raise ValueError(f"{source}: root element is <{root.tag}>, not <annotation>")
    filename = root.findtext("filename", default="").strip()
    declared = (int(_number(root, "size/height", source)), int(_number(root, "size/width", source)))
    names, boxes, difficult = [], [], []
    for index, obj in enumerate(root.findall("object")):
        where = f"{source} (object {index})"
        names.append(_text(obj, "name", where))
        boxes.append([_number(obj, f"bndbox/{key}", where) for key in ("xmin", "ymin", "xmax", "ymax")])
        difficult.append(obj.findtext("difficult", default="0").strip() not in ("0", ""))
    box = np.array(boxes, dtype=np.float32).reshape(-1, 4) - np.array([1, 1, 0, 0], dtype=np.float32)
    return VocAnnotation(filename, declared, names, box, np.array(difficult, dtype=bool))


def _open_image(image: Path | bytes, name: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(image) if isinstance(image, bytes) else image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{name}: cannot be read as an image: {exc}") from None


def pack_images(images: Sequence[Path | bytes], names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``image_shape`` (n, 3), ``image_offset`` (n,) and ``image_pixels`` of the contract, decoded to RGB.

    Two passes: image headers give every size, so the pixel array is allocated once and each decoded
    image is copied into its slice (peak memory: the array plus one image, not twice the array).
    """
    sizes = []
    for image, name in zip(images, names, strict=True):
        with _open_image(image, name) as opened:
            sizes.append((opened.height, opened.width, 3))
    shape = np.array(sizes, dtype=np.int64).reshape(-1, 3)
    lengths = shape.prod(axis=1)
    offset = np.zeros(len(shape), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offset[1:])
    pixels = np.empty(int(lengths.sum()), dtype=np.uint8)
    for i, (image, name) in enumerate(zip(images, names)):
        with _open_image(image, name) as opened:
            try:
                rgb = np.asarray(opened.convert("RGB"))
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                raise ValueError(f"{name}: cannot be read as an image: {exc}") from None
        if rgb.shape != tuple(shape[i]):
            raise ValueError(f"{name}: header says {tuple(shape[i])}, decoded {rgb.shape}")
        pixels[offset[i]:offset[i] + lengths[i]] = rgb.reshape(-1)
    return shape, offset, pixels


def detection_arrays(images: Sequence[LabelledImage], class_names: Sequence[str]) -> Arrays:
    """The contract's raw arrays from labelled images (pixels decoded and packed here)."""
    for image in images:
        if image.role not in ROLES:
            raise ValueError(f"{image.name}: role {image.role!r} is not one of {ROLES}")
    shape, offset, pixels = pack_images([image.image for image in images], [image.name for image in images])
    counts = [len(image.labels) for image in images]
    boxes = [np.asarray(image.boxes, dtype=np.float32).reshape(-1, 4) for image in images]
    labels = [np.asarray(image.labels, dtype=np.int64).reshape(-1) for image in images]
    return {
        "image_name": np.array([image.name for image in images], dtype=str),
        "image_role": np.array([image.role for image in images], dtype=str),
        "image_shape": shape,
        "image_declared": np.array([image.declared for image in images], dtype=np.int64).reshape(-1, 2),
        "image_offset": offset,
        "image_pixels": pixels,
        "box_image": np.repeat(np.arange(len(images), dtype=np.int64), counts),
        "box": np.concatenate(boxes) if boxes else np.zeros((0, 4), dtype=np.float32),
        "box_label": np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
        "class_names": np.array(class_names, dtype=str),
    }


# --------------------------------------------------------------------------- fetchers


def _pinned_member(archive: Path, member: str, sha256: str) -> bytes:
    data = read_archive_member(archive, member)
    if (digest := hashlib.sha256(data).hexdigest()) != sha256:
        raise DownloadError(f"{archive.name}: member {member} has sha256 {digest}, expected {sha256}")
    return data


def fetch_neon_trees(work_dir: Path, partial_dir: Path) -> Arrays:
    """The four annotated NEON images of the pinned deepforest 2.1.0 wheel: 2 train, 2 test, class ``Tree``."""
    wheel = fetch_pypi_file(dest_dir=work_dir, **DEEPFOREST_WHEEL)
    images = []
    for spec in NEON_IMAGES:
        png = _pinned_member(wheel, f"{NEON_DIR}{spec.stem}.png", spec.png_sha256)
        source = f"{wheel.name}: {NEON_DIR}{spec.stem}.xml"
        annotation = parse_voc_xml(_pinned_member(wheel, f"{NEON_DIR}{spec.stem}.xml", spec.xml_sha256), source)
        if unknown := sorted(set(annotation.names) - NEON_LABELS):
            raise DownloadError(f"{source}: labels {unknown} are not one of {sorted(NEON_LABELS)}")
        if len(annotation.boxes) != spec.boxes:
            raise DownloadError(f"{source}: expected {spec.boxes} boxes, got {len(annotation.boxes)}")
        keep = ~annotation.difficult
        images.append(LabelledImage(f"{spec.stem}.png", spec.role, png, annotation.declared,
                                    annotation.boxes[keep], np.zeros(int(keep.sum()), dtype=np.int64)))
    return detection_arrays(images, [NEON_CLASS])


def fetch_voc2007(work_dir: Path, partial_dir: Path, trainval: RemoteFile = VOC_TRAINVAL,
                  test: RemoteFile = VOC_TEST) -> Arrays:
    """Pascal VOC 2007: trainval (role train) then test (role test), images in ImageSets/Main order.

    Each tar is downloaded (resumable, md5-verified) into ``work_dir`` and extracted once into a folder
    named after its pinned digest, so the extracted tree is reused only for that very archive.
    ``trainval``/``test`` exist for tests (a local server); the pipeline uses the published files.
    """
    work_dir = Path(work_dir)
    images = []
    for role, split, remote in (("train", "trainval", trainval), ("test", "test", test)):
        archive = download(remote, work_dir, partial_dir)
        digest = remote.md5 or remote.sha256
        extracted = work_dir / f"VOC2007-{split}-{digest}"
        if not extracted.exists():
            safe_extract_tar(archive, extracted)
        images += read_voc_split(extracted / VOC_ROOT, split, role)
    return detection_arrays(images, VOC_CLASSES)


def read_voc_split(root: Path, split: str, role: str) -> list[LabelledImage]:
    """The images of ``root/ImageSets/Main/<split>.txt`` with their non-difficult boxes."""
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise DownloadError(f"{listing}: no such file: not a VOC 2007 {split} tree")
    ids = listing.read_text().split()
    if not ids:
        raise DownloadError(f"{listing}: lists no images")
    class_index = {name: i for i, name in enumerate(VOC_CLASSES)}
    images = []
    for image_id in ids:
        xml_path = root / "Annotations" / f"{image_id}.xml"
        jpeg = root / "JPEGImages" / f"{image_id}.jpg"
        for path in (xml_path, jpeg):
            if not path.is_file():
                raise DownloadError(f"{path}: listed in {listing.name} but missing")
        annotation = parse_voc_xml(xml_path.read_bytes(), str(xml_path))
        if unknown := sorted(set(annotation.names) - set(class_index)):
            raise DownloadError(f"{xml_path}: labels {unknown} are not VOC classes")
        keep = ~annotation.difficult
        labels = np.array([class_index[name] for name in annotation.names], dtype=np.int64).reshape(-1)
        images.append(LabelledImage(jpeg.name, role, jpeg, annotation.declared, annotation.boxes[keep], labels[keep]))
    return images


def fetch_coco_json(work_dir: Path, partial_dir: Path, annotations: str | None = None, images: str | None = None,
                    test_annotations: str | None = None, test_images: str | None = None) -> Arrays:
    """The user's COCO detection file(s): ``annotations`` (role train) and, if set, ``test_annotations``
    (role test), with their images in the folder ``images`` (``test_images`` for the test file when
    set, else ``images`` too). Classes are the categories in ascending id order; the test file must
    declare the same categories. Crowd annotations (``iscrowd`` 1, a region of many objects) are
    dropped, like VOC's difficult boxes. ``work_dir``/``partial_dir`` are unused: nothing is downloaded.
    """
    for key, value in (("annotations", annotations), ("images", images)):
        if not value:
            raise CocoJsonError(f"the coco_json source needs the setting {key!r} "
                                f"({'the COCO JSON file' if key == 'annotations' else 'the image folder'})")
    files = [("train", Path(annotations).expanduser(), Path(images).expanduser())]
    if test_annotations:
        files.append(("test", Path(test_annotations).expanduser(), Path(test_images or images).expanduser()))
    labelled, class_names, categories_of = [], None, None
    for role, json_path, image_dir in files:
        categories, records = read_coco_json(json_path, image_dir, role)
        if class_names is None:
            class_names, categories_of = categories, json_path
        elif categories != class_names:
            raise CocoJsonError(f"{json_path}: categories {categories} differ from those of {categories_of} "
                                f"({class_names}): both files must declare the same categories")
        labelled += records
    return detection_arrays(labelled, class_names)


def _field(record: object, key: str, kind: type | tuple[type, ...], where: str, source: Path):
    if not isinstance(record, dict):
        raise CocoJsonError(f"{source}: {where} is not an object")
    if key not in record:
        raise CocoJsonError(f"{source}: {where} has no key {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise CocoJsonError(f"{source}: {where}.{key} must be {names}, got {value!r}")
    return value


def read_coco_json(json_path: Path, image_dir: Path, role: str) -> tuple[list[str], list[LabelledImage]]:
    """(class names in category-id order, labelled images in the file's ``images`` order) of one COCO file."""
    json_path, image_dir = Path(json_path), Path(image_dir)
    if not json_path.is_file():
        raise CocoJsonError(f"{json_path}: no such COCO JSON file")
    if not image_dir.is_dir():
        raise CocoJsonError(f"{image_dir}: no such image folder (for {json_path})")
    try:
        document = json.loads(json_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CocoJsonError(f"{json_path}: not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CocoJsonError(f"{json_path}: the top level must be an object with images, annotations, categories")
    sections = {key: _field(document, key, list, "the top level", json_path)
                for key in ("images", "annotations", "categories")}

    categories = {}
    for i, category in enumerate(sections["categories"]):
        category_id = _field(category, "id", int, f"categories[{i}]", json_path)
        name = _field(category, "name", str, f"categories[{i}]", json_path)
        if category_id in categories:
            raise CocoJsonError(f"{json_path}: categories[{i}].id {category_id} is repeated")
        categories[category_id] = name
    if not categories:
        raise CocoJsonError(f"{json_path}: categories is empty")
    class_ids = sorted(categories)
    class_names = [categories[i] for i in class_ids]
    if len(set(class_names)) != len(class_names):
        raise CocoJsonError(f"{json_path}: categories repeat a name: {class_names}")
    label_of = {category_id: label for label, category_id in enumerate(class_ids)}

    root = image_dir.resolve()
    index_of, entries = {}, []
    for i, record in enumerate(sections["images"]):
        where = f"images[{i}]"
        image_id = _field(record, "id", int, where, json_path)
        file_name = _field(record, "file_name", str, where, json_path)
        declared = (_field(record, "height", int, where, json_path), _field(record, "width", int, where, json_path))
        if image_id in index_of:
            raise CocoJsonError(f"{json_path}: {where}.id {image_id} is repeated")
        path = (image_dir / file_name).resolve()
        if not file_name or Path(file_name).is_absolute() or not path.is_relative_to(root):
            raise CocoJsonError(f"{json_path}: {where}.file_name {file_name!r} leads outside the image folder {image_dir}")
        if not path.is_file():
            raise CocoJsonError(f"{json_path}: {where}.file_name {file_name!r}: no such file in {image_dir}")
        index_of[image_id] = len(entries)
        entries.append((file_name, path, declared, [], []))

    for i, record in enumerate(sections["annotations"]):
        where = f"annotations[{i}]"
        image_id = _field(record, "image_id", int, where, json_path)
        category_id = _field(record, "category_id", int, where, json_path)
        bbox = _field(record, "bbox", list, where, json_path)
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                     for v in bbox):
            raise CocoJsonError(f"{json_path}: {where}.bbox must be 4 finite numbers [x, y, width, height], got {bbox!r}")
        if image_id not in index_of:
            raise CocoJsonError(f"{json_path}: {where}.image_id {image_id} is not an id in images")
        if category_id not in label_of:
            raise CocoJsonError(f"{json_path}: {where}.category_id {category_id} is not an id in categories")
        crowd = record.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, bool):
            raise CocoJsonError(f"{json_path}: {where}.iscrowd must be 0 or 1, got {crowd!r}")
        if crowd:
            continue
        x, y, w, h = bbox
        _, _, _, boxes, labels = entries[index_of[image_id]]
        boxes.append((x, y, x + w, y + h))
        labels.append(label_of[category_id])

    images = [LabelledImage(file_name, role, path, declared, np.array(boxes, dtype=np.float32).reshape(-1, 4),
                            np.array(labels, dtype=np.int64))
              for file_name, path, declared, boxes, labels in entries]
    if not images:
        raise CocoJsonError(f"{json_path}: images is empty")
    return class_names, images
