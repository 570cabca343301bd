"""Object detection: what the stages ask of a detector.

Each split holds ``x`` (uint8 tiles, NHWC) and ``y`` (padded boxes, see :mod:`.boxes`). A
prediction is ``boxes`` (N, K, 4), ``scores`` (N, K) and ``labels`` (N, K), padding rows
labelled -1. The detectors own their losses, in torchvision's convention: a torch detector
called with the targets returns its named loss components (the loss is their sum; the epoch
metric ``box_loss`` the box-regression ones, named ``box*``). The Keras one-stage detector is
compiled with the same CenterNet loss, on targets encoded by the same NumPy function.
Scores: COCO mAP (pycocotools) and precision/recall at IoU 0.4 above the score threshold of the
best F1 on the validation split (DeepForest's convention), hence :attr:`scores_with_validation`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from curriculum.layout import ProcessedData
from curriculum.projects.detection import boxes as box_ops
from curriculum.projects.detection import scores
from curriculum.tasks.base import Evaluation, Predictions, Task, training_curve_plots

MATCH_IOU = 0.4  # DeepForest's benchmark IoU for precision and recall
PARITY_IOU = 0.99  # an exported detection matches the trained model's at this IoU or more
PARITY_CORNERS = 0.01  # pixels: how far the corners of two boxes of no area may be apart
PARITY_MIN_SCORE = 0.05  # below it, ties at the top-K boundary may swap which box is kept


@dataclass(frozen=True)
class Detection(Task):
    output_names = ("boxes", "scores", "labels")
    epoch_metric = "box_loss"
    epoch_metric_higher_is_better = False
    headline = "map_50"
    higher_is_better = True
    scores_with_validation = True  # the evaluate stage also passes the validation split's predictions

    def table_metrics(self) -> tuple[str, ...]:
        return (self.headline, "map", "precision_40", "recall_40")

    def model_spec(self, data: ProcessedData) -> dict[str, Any]:
        return {"image_size": int(data.split("train")["x"].shape[1]), "n_classes": len(data.info["class_names"])}

    def epoch_batches(self, split: Mapping[str, np.ndarray], epoch: int, train: Any, seed: int):
        """Each tile under one of the square's eight symmetries (flips, 90-degree turns), boxes moved
        with their pixels, colours jittered by ``train.colour_jitter``; drawn from ``(seed, epoch)``,
        so both frameworks train on the same epochs."""
        x, y = box_ops.augment_epoch(split["x"], split["y"], seed, epoch, train.colour_jitter)
        order = np.random.default_rng([seed, epoch, 1]).permutation(len(x))
        return x, order, y

    # ------------------------------------------------------------------ torch: the detectors' own losses

    def torch_loss(self, train: Any) -> Callable[[Any, Any], Any]:
        def loss(components: Mapping[str, Any], target: Any) -> Any:
            return sum(components.values())
        return loss

    def torch_targets(self, y: np.ndarray) -> Any:
        import torch

        return torch.as_tensor(y, dtype=torch.float32)

    def torch_metric(self, components: Mapping[str, Any], target: Any) -> Any:
        import torch

        box = sum(value.detach() for name, value in components.items() if name.startswith("box"))
        return torch.as_tensor(box, dtype=torch.float32).expand(len(target))

    def torch_head(self) -> Any:
        from torch import nn

        return nn.Identity()  # each detector's decoder is its project head (Project.heads)

    # ------------------------------------------------------------------ Keras

    def keras_compile(self, train: Any) -> dict[str, Any]:
        from curriculum.projects.detection import centernet_keras

        return {"loss": centernet_keras.keras_loss(train), "metrics": [centernet_keras.keras_box_metric(train)]}

    # ------------------------------------------------------------------ evaluation

    def _truth(self, data: ProcessedData, split: str) -> list[np.ndarray]:
        return [box_ops.unpad(y) for y in data.split(split)["y"]]

    def score(self, data: ProcessedData, predictions: Predictions, split: str = "test",
              threshold: float | None = None) -> dict[str, Any]:
        truth, found = self._truth(data, split), scores.split_detections(predictions)
        metrics: dict[str, Any] = scores.coco_map(truth, found, len(data.info["class_names"]))
        if threshold is not None:
            matched = scores.at_threshold(truth, found, MATCH_IOU, threshold)
            metrics.update({f"{key}_40": value for key, value in matched.items()}, score_threshold=threshold)
        return metrics

    def evaluate(
        self, data: ProcessedData, predictions: Predictions, settings: Any, baselines: Mapping[str, dict[str, Any]],
        val_predictions: Predictions | None = None,
    ) -> Evaluation:
        if val_predictions is None:
            raise ValueError("detection scores need the validation split's predictions to choose the score threshold")
        threshold = scores.best_f1_threshold(self._truth(data, "val"), scores.split_detections(val_predictions), MATCH_IOU)
        metrics = self.score(data, predictions, "test", threshold)
        metrics["val"] = self.score(data, val_predictions, "val", threshold)
        metrics["vs_baselines"] = self.compare(metrics, baselines)
        truth, found = self._truth(data, "test"), scores.split_detections(predictions)
        curve = scores.precision_recall_curve(truth, found, MATCH_IOU)
        points = np.unique(np.linspace(0, len(curve["threshold"]) - 1, min(len(curve["threshold"]), 200)).astype(int))
        pr_records = [{"threshold": float(curve["threshold"][i]), "precision": float(curve["precision"][i]),
                       "recall": float(curve["recall"][i])} for i in points]
        image = boxes_figure(data.split("test")["x"], truth, found, threshold, data.info["class_names"],
                             settings.plot_images)
        return Evaluation(metrics, {"precision_recall.json": pr_records, "test_boxes.jpg": image})

    def parity(self, reference: Predictions, exported: Predictions, atol: float) -> dict[str, Any]:
        """Every detection scoring at least :data:`PARITY_MIN_SCORE` in either model has its match
        in the other: same label, IoU >= :data:`PARITY_IOU`, score within ``atol``. Where the other
        model's list is full (K detections), only scores above its last one by more than ``atol``
        are sure to be in it: which of two nearly equal scores makes the top K is not a difference."""
        worst_iou, worst_score, unmatched, compared = 1.0, 0.0, 0, 0
        k = reference["scores"].shape[1]
        for one, other in ((reference, exported), (exported, reference)):
            for a, b in zip(scores.split_detections(one), scores.split_detections(other), strict=True):
                floor = max(PARITY_MIN_SCORE, float(b[1].min()) + atol) if len(b[1]) == k else PARITY_MIN_SCORE
                keep = a[1] >= floor
                for box, score, label in zip(a[0][keep], a[1][keep], a[2][keep]):
                    compared += 1
                    same = b[2] == label
                    overlap = scores.iou_matrix(box[None], b[0][same])[0] if same.any() else np.zeros(0)
                    # a box of no area (an untrained size head's) has no IoU: then its corners must agree
                    if (box[2] - box[0]) * (box[3] - box[1]) <= 0:
                        overlap = (np.abs(b[0][same] - box).max(axis=1, initial=0.0) <= PARITY_CORNERS).astype(float)
                    if not len(overlap) or overlap.max() < PARITY_IOU:
                        unmatched += 1
                        continue
                    match = int(np.argmax(overlap))
                    worst_iou = min(worst_iou, float(overlap[match]))
                    worst_score = max(worst_score, abs(float(score) - float(b[1][same][match])))
        return {"min_iou": worst_iou, "max_score_diff": worst_score, "unmatched": unmatched,
                "compared_detections": compared, "examples": int(len(reference["scores"])),
                "passed": unmatched == 0 and worst_score <= atol}

    def plot_definitions(self, project: str, variants: list[str]) -> list[dict[str, Any]]:
        definitions = training_curve_plots(project, variants, self.epoch_metric)
        definitions.append({f"{project} test precision-recall at IoU 0.4": {
            "template": "simple", "x": "recall",
            "y": {f"reports/{project}/{v}/plots/precision_recall.json": "precision" for v in variants}}})
        definitions += [f"reports/{project}/{v}/plots/test_boxes.jpg" for v in variants]
        return definitions


def boxes_figure(images: np.ndarray, truth: list[np.ndarray], found: list[scores.Detections], threshold: float,
                 class_names: list[str], limit: int) -> bytes:
    """The first ``limit`` test images with the true boxes (green) and the detections scoring at
    least ``threshold`` (red), as a JPEG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from curriculum.plots import figure_jpeg

    shown = min(limit, len(images))
    figure, axes = plt.subplots(1, shown, figsize=(5 * shown, 5.4), squeeze=False)
    for axis, image, true_boxes, (boxes, det_scores, labels) in zip(axes[0], images, truth, found):
        axis.imshow(image)
        for x0, y0, x1, y1, _ in true_boxes:
            axis.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.2))
        kept = det_scores >= threshold
        for (x0, y0, x1, y1), score in zip(boxes[kept], det_scores[kept]):
            axis.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=1.0))
        axis.set_title(f"{len(true_boxes)} true (green), {int(kept.sum())} found (red, score >= {threshold:.2f})",
                       fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    return figure_jpeg(figure, dpi=90)
