"""Detection scores: COCO mAP from pycocotools, and precision/recall at one IoU and score threshold.

Truth per image: ``(k, 5)`` boxes + label; detections per image: ``(boxes (K, 4), scores (K,),
labels (K,))``, padding rows (label -1) ignored. mAP is COCO's (pycocotools' ``COCOeval``, 101
recall points, up to 100 detections per image): ``map`` averages IoU 0.50:0.95, ``map_50`` and
``map_75`` are single IoUs. Precision/recall at IoU 0.4 follow DeepForest's benchmark convention:
detections above a score threshold matched greedily, best score first, to an unmatched true box
of the same class.
"""
from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


def split_detections(predictions: dict[str, np.ndarray]) -> list[Detections]:
    """A split's predictions as one ``(boxes, scores, labels)`` per image, padding rows dropped."""
    out = []
    for boxes, scores, labels in zip(predictions["boxes"], predictions["scores"], predictions["labels"], strict=True):
        real = labels >= 0
        out.append((boxes[real].astype(np.float64), scores[real].astype(np.float64), labels[real].astype(np.int64)))
    return out


def coco_map(truth: Sequence[np.ndarray], detections: Sequence[Detections], n_classes: int) -> dict[str, float]:
    """COCO box mAP over IoU 0.50:0.95, at 0.50 and at 0.75 (pycocotools)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = [{"id": i + 1} for i in range(len(truth))]
    annotations = [
        {"image_id": i + 1, "category_id": int(label) + 1, "iscrowd": 0,
         "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "area": float((x1 - x0) * (y1 - y0))}
        for i, boxes in enumerate(truth) for x0, y0, x1, y1, label in boxes
    ]
    for number, annotation in enumerate(annotations, start=1):
        annotation["id"] = number
    results = [
        {"image_id": i + 1, "category_id": int(label) + 1, "score": float(score),
         "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]}
        for i, (boxes, scores, labels) in enumerate(detections)
        for (x0, y0, x1, y1), score, label in zip(boxes, scores, labels, strict=True)
    ]
    if not annotations or not results:
        return {"map": 0.0, "map_50": 0.0, "map_75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
        ground = COCO()
        ground.dataset = {"images": images, "annotations": annotations,
                          "categories": [{"id": c + 1} for c in range(n_classes)]}
        ground.createIndex()
        evaluation = COCOeval(ground, ground.loadRes(results), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats  # -1 where no truth exists at all
    return {"map": max(float(stats[0]), 0.0), "map_50": max(float(stats[1]), 0.0), "map_75": max(float(stats[2]), 0.0)}


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4)."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def ranked_matches(truth: Sequence[np.ndarray], detections: Sequence[Detections], iou: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Every detection of the split, best score first, and whether it matched a true box (greedy,
    per image and class), plus the number of true boxes. Greedy matching in score order makes the
    matches at any threshold those of the detections above it: one pass gives every threshold's counts."""
    scores, hits = [], []
    for boxes_true, (boxes, det_scores, labels) in zip(truth, detections, strict=True):
        order = np.argsort(-det_scores, kind="stable")
        overlap = iou_matrix(boxes[order], boxes_true[:, :4]) if len(boxes_true) else np.zeros((len(order), 0))
        same_class = labels[order][:, None] == boxes_true[None, :, 4].astype(np.int64)
        taken = np.zeros(len(boxes_true), bool)
        for row in range(len(order)):
            candidates = np.where(same_class[row] & ~taken & (overlap[row] >= iou), overlap[row], -1.0)
            best = int(np.argmax(candidates)) if len(candidates) else -1
            hit = best >= 0 and candidates[best] >= 0
            if hit:
                taken[best] = True
            hits.append(hit)
        scores.extend(det_scores[order])
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return np.asarray(scores, dtype=np.float64)[order], np.asarray(hits, bool)[order], int(sum(len(t) for t in truth))


def precision_recall_curve(truth: Sequence[np.ndarray], detections: Sequence[Detections], iou: float) -> dict[str, np.ndarray]:
    """Precision and recall at every score threshold (keeping the detections with score >= it)."""
    scores, hits, n_true = ranked_matches(truth, detections, iou)
    tp = np.cumsum(hits)
    kept = np.arange(1, len(hits) + 1)
    return {"threshold": scores, "precision": tp / np.maximum(kept, 1), "recall": tp / max(n_true, 1)}


def best_f1_threshold(truth: Sequence[np.ndarray], detections: Sequence[Detections], iou: float) -> float:
    """The score threshold of the highest F1 (on the validation split: then applied to the test split)."""
    curve = precision_recall_curve(truth, detections, iou)
    if len(curve["threshold"]) == 0:
        return 1.0
    p, r = curve["precision"], curve["recall"]
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return float(curve["threshold"][int(np.argmax(f1))])


def at_threshold(truth: Sequence[np.ndarray], detections: Sequence[Detections], iou: float, threshold: float) -> dict[str, float]:
    """Precision, recall and F1 of the detections scoring at least ``threshold``."""
    scores, hits, n_true = ranked_matches(truth, detections, iou)
    kept = scores >= threshold
    tp, n_kept = int(hits[kept].sum()), int(kept.sum())
    precision = tp / n_kept if n_kept else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_positives": tp, "detections": n_kept,
            "true_boxes": n_true}
