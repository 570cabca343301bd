"""Classification metrics and plot data: pure functions of labels and probabilities."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# scikit-learn is imported by the functions that score (evaluate, baselines), not at module level:
# stages that only need predicted_labels (export) don't pay its second of import time.


def predicted_labels(proba: np.ndarray, binary: bool, threshold: float = 0.5) -> np.ndarray:
    return (proba.reshape(-1) >= threshold).astype(np.int64) if binary else proba.argmax(axis=1)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, binary: bool, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, loss and macro-F1 for every task, plus per-class precision/recall; for binary
    tasks also the metrics that stay honest under class imbalance (ROC-AUC, PR-AUC, balanced accuracy)."""
    from sklearn import metrics

    y_pred = predicted_labels(proba, binary)
    labels = list(range(len(class_names)))
    precision, recall, _, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    result: dict[str, Any] = {
        "accuracy": metrics.accuracy_score(y_true, y_pred),
        "macro_f1": metrics.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "support": int(s)}
            for name, p, r, s in zip(class_names, precision, recall, support, strict=True)
        },
    }
    if binary:
        positive = proba.reshape(-1)
        result.update({
            "loss": metrics.log_loss(y_true, positive, labels=[0, 1]),
            "roc_auc": metrics.roc_auc_score(y_true, positive),
            "pr_auc": metrics.average_precision_score(y_true, positive),
            "balanced_accuracy": metrics.balanced_accuracy_score(y_true, y_pred),
        })
    else:
        result["loss"] = metrics.log_loss(y_true, proba, labels=labels)
    return {key: float(value) if isinstance(value, (float, np.floating)) else value for key, value in result.items()}


def confusion_records(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> list[dict[str, str]]:
    """One record per example, the shape DVC's ``confusion`` template reads."""
    return [{"actual": class_names[t], "predicted": class_names[p]} for t, p in zip(y_true, y_pred, strict=True)]


def roc_records(y_true: np.ndarray, positive_proba: np.ndarray) -> list[dict[str, float]]:
    from sklearn import metrics

    fpr, tpr, _ = metrics.roc_curve(y_true, positive_proba)
    return [{"fpr": float(f), "tpr": float(t)} for f, t in zip(fpr, tpr, strict=True)]


def precision_recall_records(y_true: np.ndarray, positive_proba: np.ndarray) -> list[dict[str, float]]:
    from sklearn import metrics

    precision, recall, _ = metrics.precision_recall_curve(y_true, positive_proba)
    return [{"recall": float(r), "precision": float(p)} for r, p in zip(recall, precision, strict=True)]
