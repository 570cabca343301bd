"""The detection project's own logic: tiling and clipping, box-aware augmentation, the box checks,
and the scores (mAP against a case computed by hand, precision/recall, the parity rule)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curriculum.projects.detection import boxes, scores
from curriculum.projects.detection.task import Detection
from tests.smoke import set_dotted

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- tiling


def test_tile_starts_cover_the_image_with_an_edge_aligned_last_tile():
    assert boxes.tile_starts(2299, 400) == [0, 400, 800, 1200, 1600, 1899]
    assert boxes.tile_starts(800, 400) == [0, 400]
    assert boxes.tile_starts(400, 400) == [0]
    assert boxes.tile_starts(375, 400) == [0]  # smaller than a tile: one, zero-padded


def test_a_box_belongs_to_a_tile_when_half_of_it_is_inside_and_is_clipped_to_it():
    image = np.zeros((10, 20, 3), np.uint8)
    # box 0: 6 of its 8 columns in the left tile (x 0-10); box 1: exactly half; box 2: 4 of 10 columns
    truth = np.array([[4, 2, 12, 6, 0], [8, 2, 12, 6, 0], [6, 0, 16, 4, 0]], np.float32)
    left, right = boxes.tile_image(image, truth, 0, 10, 0.5)
    np.testing.assert_array_equal(left.boxes, [[4, 2, 10, 6, 0], [8, 2, 10, 6, 0]])
    # right tile starts at x 10: box 0 has 2 of 8 columns there (dropped), box 1 half (kept), box 2 6 of 10
    np.testing.assert_array_equal(right.boxes, [[0, 2, 2, 6, 0], [0, 0, 6, 4, 0]])
    assert (left.left, right.left) == (0, 10)


def test_a_small_image_is_padded_to_a_whole_tile():
    image = np.full((5, 7, 3), 200, np.uint8)
    (tile,) = boxes.tile_image(image, np.zeros((0, 5), np.float32), 0, 8, 0.5)
    assert tile.pixels.shape == (8, 8, 3)
    assert tile.pixels[:5, :7].min() == 200 and tile.pixels[5:].max() == 0 and tile.pixels[:, 7:].max() == 0


def test_padding_round_trips():
    per_image = [np.array([[1, 2, 3, 4, 0]], np.float32), np.zeros((0, 5), np.float32)]
    padded = boxes.pad_boxes(per_image)
    assert padded.shape == (2, 1, 5) and (padded[1] == -1).all()
    np.testing.assert_array_equal(boxes.unpad(padded[0]), per_image[0])
    assert len(boxes.unpad(padded[1])) == 0


# --------------------------------------------------------------------------- augmentation


def ink_box(image: np.ndarray) -> list[float]:
    rows, cols = np.nonzero(image[:, :, 0])
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


@pytest.mark.parametrize("symmetry", boxes.SYMMETRIES)
def test_a_box_moves_with_its_pixels(symmetry):
    size = 16
    image = np.zeros((size, size, 3), np.uint8)
    image[3:7, 2:12] = 255  # rows 3-6, columns 2-11: box (2, 3, 12, 7)
    padded = np.array([[2, 3, 12, 7, 0], [-1, -1, -1, -1, -1]], np.float32)
    moved_image = boxes.transform_image(image, symmetry)
    moved = boxes.transform_boxes(padded, symmetry, size)
    assert list(moved[0, :4]) == ink_box(moved_image)
    assert (moved[1] == -1).all()  # padding stays padding


def test_epoch_augmentation_is_seeded_and_keeps_every_box():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    y = boxes.pad_boxes([np.array([[1, 2, 5, 9, 0]], np.float32)] * 6)
    first, again = boxes.augment_epoch(x, y, 3, 1), boxes.augment_epoch(x, y, 3, 1)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    other = boxes.augment_epoch(x, y, 3, 2)
    assert not np.array_equal(first[0], other[0])
    areas = (first[1][:, 0, 2] - first[1][:, 0, 0]) * (first[1][:, 0, 3] - first[1][:, 0, 1])
    assert (areas == 28).all()


# --------------------------------------------------------------------------- box checks


def raw_data(**changes) -> dict[str, np.ndarray]:
    """Two 20x30 images, three boxes, in the sources' raw format."""
    images = [np.full((20, 30, 3), 9, np.uint8), np.full((20, 30, 3), 7, np.uint8)]
    raw = {
        "image_name": np.array(["a.png", "b.png"]), "image_role": np.array(["train", "test"]),
        "image_shape": np.array([[20, 30, 3], [20, 30, 3]]), "image_declared": np.array([[20, 30], [20, 30]]),
        "image_offset": np.array([0, 1800]), "image_pixels": np.concatenate([i.ravel() for i in images]),
        "box_image": np.array([0, 0, 1]), "box": np.array([[1, 1, 5, 5], [10, 2, 20, 12], [0, 0, 30, 20]], np.float32),
        "box_label": np.array([0, 0, 0]), "class_names": np.array(["Tree"]),
    }
    raw.update(changes)
    return raw


def failures(raw: dict[str, np.ndarray]) -> list[str]:
    from curriculum.projects import get_project
    from curriculum.validation import validate_tables

    project = get_project("detection")
    config = project.load_config(ROOT / "params.yaml")
    tables, expectations = project.validation(raw, config)
    report = validate_tables("detection", tables, expectations)
    return [failure["message"] for table in report["tables"].values() for failure in table["failed"]]


def test_good_boxes_pass():
    assert failures(raw_data()) == []


@pytest.mark.parametrize("change, expected", [
    ({"box": np.array([[1, 1, 5, 5], [10, 2, 31, 12], [0, 0, 30, 20]], np.float32)}, ("right_margin", "a.png box 1")),
    ({"box": np.array([[1, 1, 5, 5], [10, 2, 20, 12], [0, -2, 30, 20]], np.float32)}, ("y_min", "b.png box 0")),
    ({"box": np.array([[6, 1, 5, 5], [10, 2, 20, 12], [0, 0, 30, 20]], np.float32)}, ("box_width", "a.png box 0")),
    ({"box": np.array([[1, 1, 5, 1], [10, 2, 20, 12], [0, 0, 30, 20]], np.float32)}, ("box_height", "a.png box 0")),
    ({"box_label": np.array([0, 3, 0])}, ("label", "a.png box 1")),
    ({"image_declared": np.array([[20, 30], [20, 32]])}, ("declared_width", "b.png")),
    ({"box": np.array([[1, 1, 5, 5], [np.nan, 2, 20, 12], [0, 0, 30, 20]], np.float32)}, ("x_min", "a.png box 1")),
])
def test_a_bad_box_or_image_fails_naming_the_file_and_the_box(change, expected):
    messages = failures(raw_data(**change))
    assert messages, f"{change} passed validation"
    assert any(all(word in message for word in expected) for message in messages), messages


# --------------------------------------------------------------------------- scores


def detections(*rows: tuple[list[float], float]) -> scores.Detections:
    return (np.array([r[0] for r in rows], float), np.array([r[1] for r in rows], float), np.zeros(len(rows), np.int64))


def test_map_matches_a_case_computed_by_hand():
    """Two true boxes; detections: a hit (0.9), a miss (0.8), a hit (0.7). Precision at recall 0.5
    is 1, then 2/3 up to recall 1; COCO interpolates over 101 recall points: (51 * 1 + 50 * 2/3) / 101
    at every IoU threshold, since the hits are exact."""
    truth = [np.array([[0, 0, 10, 10, 0], [20, 20, 30, 30, 0]], float)]
    found = [detections(([0, 0, 10, 10], 0.9), ([50, 50, 60, 60], 0.8), ([20, 20, 30, 30], 0.7))]
    expected = (51 + 50 * 2 / 3) / 101
    result = scores.coco_map(truth, found, n_classes=1)
    assert result["map_50"] == pytest.approx(expected, abs=1e-6)
    assert result["map"] == pytest.approx(expected, abs=1e-6)


def test_map_counts_a_loose_box_only_at_loose_ious():
    """A detection shifted by 2 px on a 10 px box has IoU 80/120 = 0.667: a hit at IoU 0.50-0.65
    (4 of the 10 COCO thresholds), a miss above."""
    truth = [np.array([[0, 0, 10, 10, 0]], float)]
    found = [detections(([2, 0, 12, 10], 0.9))]
    result = scores.coco_map(truth, found, n_classes=1)
    assert result["map_50"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(0.4)


def test_precision_recall_at_a_threshold_and_the_best_f1_threshold():
    truth = [np.array([[0, 0, 10, 10, 0], [20, 20, 30, 30, 0]], float)]
    found = [detections(([0, 0, 10, 10], 0.9), ([50, 50, 60, 60], 0.8), ([21, 21, 31, 31], 0.7))]
    # IoU of the third with the second true box: 81 / 119 = 0.68 >= 0.4
    assert scores.at_threshold(truth, found, 0.4, 0.85) == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "true_positives": 1, "detections": 1, "true_boxes": 2})
    assert scores.at_threshold(truth, found, 0.4, 0.7)["recall"] == 1.0
    assert scores.best_f1_threshold(truth, found, 0.4) == 0.7  # F1 0.8 at 0.7 vs 0.67 at 0.9


def test_greedy_matching_gives_each_true_box_to_one_detection():
    truth = [np.array([[0, 0, 10, 10, 0]], float)]
    found = [detections(([0, 0, 10, 10], 0.9), ([0, 0, 10, 10], 0.8))]
    assert scores.at_threshold(truth, found, 0.4, 0.0)["true_positives"] == 1


def prediction(boxes_: list, scores_: list) -> dict[str, np.ndarray]:
    k = 3
    out = {"boxes": np.zeros((1, k, 4), np.float32), "scores": np.zeros((1, k), np.float32),
           "labels": np.full((1, k), -1, np.int64)}
    out["boxes"][0, :len(boxes_)] = boxes_
    out["scores"][0, :len(scores_)] = scores_
    out["labels"][0, :len(scores_)] = 0
    return out


def test_parity_needs_matching_boxes_and_scores():
    task = Detection()
    reference = prediction([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.5])
    assert task.parity(reference, prediction([[20, 20, 40, 40], [0, 0, 10, 10]], [0.5, 0.9]), 1e-4)["passed"]
    assert not task.parity(reference, prediction([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.5002]), 1e-4)["passed"]
    moved = task.parity(reference, prediction([[0, 0, 10, 10], [20, 20, 40, 41]], [0.9, 0.5]), 1e-4)
    assert not moved["passed"] and moved["unmatched"] == 2  # missing in each direction
    assert not task.parity(reference, prediction([[0, 0, 10, 10]], [0.9]), 1e-4)["passed"]


def test_the_long_profile_is_a_params_switch_the_config_accepts(tmp_path):
    """`python -m pipeline experiment detection long` passes these to `dvc exp run --set-param`."""
    import yaml

    from curriculum.projects import get_project

    project = get_project("detection")
    overrides = project.profile_overrides("long")
    assert "detection.train.epochs=80" in overrides
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for override in overrides:
        dotted, value = override.split("=", 1)
        set_dotted(params, dotted, yaml.safe_load(value))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    config = project.load_config(tmp_path / "params.yaml")
    assert config.variant_train("centernet-torch").epochs == 80
    assert config.variant_train("faster-rcnn-torch").epochs == 40
    with pytest.raises(KeyError, match="no profile 'short'"):
        project.profile_overrides("short")


def test_colour_jitter_is_seeded_and_leaves_boxes_alone():
    x = np.full((3, 8, 8, 3), 120, np.uint8)
    y = boxes.pad_boxes([np.array([[1, 1, 4, 4, 0]], np.float32)] * 3)
    plain, jittered = boxes.augment_epoch(x, y, 5, 1), boxes.augment_epoch(x, y, 5, 1, colour_jitter=0.2)
    np.testing.assert_array_equal(plain[1], jittered[1])
    assert not np.array_equal(plain[0], jittered[0])
    np.testing.assert_array_equal(jittered[0], boxes.augment_epoch(x, y, 5, 1, colour_jitter=0.2)[0])
