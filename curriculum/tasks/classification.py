"""Classification: one sigmoid unit (binary) or a softmax over classes (multiclass).

The processed splits hold ``x`` and integer labels ``y``; ``info["class_names"]`` names the
classes. A prediction is ``{"proba": ...}``: (n, 1) positive-class probabilities for binary
tasks, (n, classes) for multiclass ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from curriculum import metrics
from curriculum.config import PositiveInt, Section
from curriculum.layout import Arrays, ProcessedData
from curriculum.tasks.base import Evaluation, Predictions, Task, training_curve_plots


def limit_per_class(x: np.ndarray, y: np.ndarray, max_per_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first ``max_per_class`` examples of each class (a tiny, stable slice for smoke runs)."""
    if max_per_class is None:
        return x, y
    keep = np.concatenate([np.flatnonzero(y == label)[:max_per_class] for label in np.unique(y)])
    keep.sort()
    return x[keep], y[keep]


def limit_raw_per_class(raw: Arrays, max_per_class: int | None) -> Arrays:
    """:func:`limit_per_class` on a raw dataset's ``x``/``y`` and, when published, ``x_test``/``y_test``."""
    raw = dict(raw)
    raw["x"], raw["y"] = limit_per_class(raw["x"], raw["y"], max_per_class)
    if "x_test" in raw:
        raw["x_test"], raw["y_test"] = limit_per_class(raw["x_test"], raw["y_test"], max_per_class)
    return raw


def length_grouped_order(order: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                         pool_batches: int = 50) -> np.ndarray:
    """``order`` regrouped so each mini-batch holds examples of similar length, as Hugging Face's
    ``group_by_length`` does: consecutive pools of ``pool_batches`` batches are sorted by length
    (stable), cut into batches, and the full batches shuffled (a short last batch stays last, so
    the back end's cuts fall where they were). A model that drops the padding columns of a batch
    then does a fraction of the work; the batches are still random mixes of the data."""
    pool = batch_size * pool_batches
    grouped = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                              for chunk in np.split(order, range(pool, len(order), pool))])
    full = len(grouped) // batch_size
    batches = grouped[:full * batch_size].reshape(full, batch_size)[rng.permutation(full)]
    return np.concatenate([batches.reshape(-1), grouped[full * batch_size:]])


class ClassificationBaselines(Section):
    logistic_max_iter: PositiveInt  # iterations of the logistic-regression baseline's solver


@dataclass(frozen=True)
class Classification(Task):
    """``binary``: one sigmoid unit and BCE (``train.pos_weight`` weights positives when the
    project's train config has it); else softmax and cross-entropy. ``example_images``: evaluation
    also draws a grid of misclassified test images (``evaluate.misclassified_examples`` of them).
    ``augment_images``: the inputs are images; both frameworks train on the batches
    :meth:`epoch_batches` draws, augmented afresh every epoch with the train config's ``augment``
    settings (None there: the images as they are). ``example_texts``: the split array holding each
    example's raw text; evaluation then tabulates the test examples the model was most confidently
    wrong about (``evaluate.confidently_wrong_examples`` of them)."""

    binary: bool
    example_images: bool = False
    augment_images: bool = False
    example_texts: str | None = None

    output_names = ("proba",)
    epoch_metric = "accuracy"
    epoch_metric_higher_is_better = True
    headline = "accuracy"
    higher_is_better = True

    def table_metrics(self) -> tuple[str, ...]:
        ranking = ("balanced_accuracy", "roc_auc") if self.binary else ("macro_f1",)
        return (self.headline, *ranking, "loss")

    # ------------------------------------------------------------------ data

    def model_spec(self, data: ProcessedData) -> dict[str, Any]:
        n_classes = len(data.info["class_names"])
        return {
            "input_shape": list(self.inputs(data.split("train")).shape[1:]),
            "n_outputs": 1 if self.binary else n_classes,
        }

    def labels(self, proba: np.ndarray) -> np.ndarray:
        return metrics.predicted_labels(proba, self.binary)

    def epoch_batches(self, split: Arrays, epoch: int, train: Any, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
        """With ``augment_images``: the epoch's freshly augmented images
        (:func:`curriculum.augment.augment_epoch`) when ``train.augment`` is set, the inputs as they
        are when it is None, and a shuffled order, all drawn from ``(seed, epoch)`` (independent
        streams) -- so torch and Keras train on identical batches either way. With
        ``train.group_by_length`` (token-id inputs, 0 = padding): a shuffled order whose batches hold
        reviews of similar length (:func:`length_grouped_order`), for models that skip padding."""
        by_length = getattr(train, "group_by_length", False)
        if not (self.augment_images or by_length):
            return None
        x = self.inputs(split)
        settings = getattr(train, "augment", None) if self.augment_images else None
        if settings is not None:
            from curriculum.augment import augment_epoch

            x = augment_epoch(x, settings, seed, epoch)
        rng = np.random.default_rng([seed, epoch, 1])
        order = rng.permutation(len(x))
        if by_length:
            order = length_grouped_order(order, (x != 0).sum(axis=1), train.batch_size or len(x), rng)
        return x, order

    # ------------------------------------------------------------------ torch

    def torch_loss(self, train: Any) -> Callable[[Any, Any], Any]:
        from torch import nn, tensor

        if not self.binary:
            return nn.CrossEntropyLoss()
        pos_weight = getattr(train, "pos_weight", None)
        return nn.BCEWithLogitsLoss(pos_weight=tensor(pos_weight) if pos_weight else None)

    def torch_targets(self, y: np.ndarray) -> Any:
        """Float column targets for BCE, integer class indices for cross-entropy."""
        import torch

        if self.binary:
            return torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1)
        return torch.as_tensor(y, dtype=torch.int64)

    def torch_metric(self, raw_output: Any, target: Any) -> Any:
        """1.0 where the predicted class is right (accuracy, averaged by the loop)."""
        predicted = (raw_output > 0).float() if self.binary else raw_output.argmax(dim=1)
        return (predicted == target).float()

    def torch_head(self) -> Any:
        from torch import nn

        return nn.Sigmoid() if self.binary else nn.Softmax(dim=1)

    # ------------------------------------------------------------------ Keras

    def keras_compile(self, train: Any) -> dict[str, Any]:
        loss = "binary_crossentropy" if self.binary else "sparse_categorical_crossentropy"
        return {"loss": loss, "metrics": ["accuracy"]}

    def keras_targets(self, y: np.ndarray) -> np.ndarray:
        return y.astype("float32").reshape(-1, 1) if self.binary else y

    def sample_weights(self, y: np.ndarray, train: Any) -> np.ndarray | None:
        """``pos_weight`` as a per-example weight, as torch's ``BCEWithLogitsLoss(pos_weight=...)``."""
        pos_weight = getattr(train, "pos_weight", None) if self.binary else None
        return np.where(y == 1, float(pos_weight), 1.0).astype("float32") if pos_weight else None

    # ------------------------------------------------------------------ NumPy

    def numpy_objective(self, train: Any) -> Any:
        from curriculum.models.numpy_mlp import BinaryCrossEntropy

        if not self.binary:
            raise ValueError("the NumPy network is a binary classifier; this task is multiclass")
        return BinaryCrossEntropy(getattr(train, "pos_weight", None))

    # ------------------------------------------------------------------ serving

    def serving_card(self, data: ProcessedData) -> dict[str, Any]:
        return {"class_names": [str(name) for name in data.info["class_names"]]}

    def answers(self, predictions: Predictions, card: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The predicted class and every class's probability (binary: both, from the one unit)."""
        proba = np.asarray(predictions["proba"], dtype=np.float64)
        labels = self.labels(proba)  # the evaluation's rule (binary: >= 0.5)
        if self.binary:
            proba = np.concatenate([1.0 - proba, proba], axis=1)
        names = card["class_names"]
        return [{"label": names[int(label)], "probabilities": dict(zip(names, map(float, row)))}
                for label, row in zip(labels, proba)]

    # ------------------------------------------------------------------ evaluation

    def score(self, data: ProcessedData, predictions: Predictions, split: str = "test") -> dict[str, Any]:
        class_names = [str(name) for name in data.info["class_names"]]
        return metrics.classification_metrics(self.targets(data.split(split)), predictions["proba"], self.binary, class_names)

    def evaluate(
        self, data: ProcessedData, predictions: Predictions, settings: Any, baselines: Mapping[str, dict[str, Any]]
    ) -> Evaluation:
        test = data.split("test")
        y_test, proba = self.targets(test), predictions["proba"]
        y_pred = self.labels(proba)
        class_names = [str(name) for name in data.info["class_names"]]
        scores = self.score(data, predictions)
        if baselines:
            scores["vs_baselines"] = self.compare(scores, baselines)
        plots: dict[str, Any] = {"confusion.json": metrics.confusion_records(y_test, y_pred, class_names)}
        if self.binary:
            plots["roc.json"] = metrics.roc_records(y_test, proba.reshape(-1))
            plots["precision_recall.json"] = metrics.precision_recall_records(y_test, proba.reshape(-1))
        if self.example_images and settings.misclassified_examples:
            from curriculum.plots import misclassified_grid

            plots["misclassified.png"] = misclassified_grid(
                self.inputs(test), y_test, y_pred, class_names, settings.misclassified_examples)
        if self.example_texts is not None and settings.confidently_wrong_examples:
            from curriculum.plots import confidently_wrong_table

            answer_proba = proba.reshape(-1) if self.binary else proba.max(axis=1)
            if self.binary:
                answer_proba = np.where(y_pred == 1, answer_proba, 1.0 - answer_proba)
            plots["confidently_wrong.png"] = confidently_wrong_table(
                test[self.example_texts], y_test, np.where(y_pred != y_test, answer_proba, np.nan), class_names,
                settings.confidently_wrong_examples)
        return Evaluation(scores, plots)

    def baselines(self, data: ProcessedData, settings: Any, seed: int) -> dict[str, Predictions]:
        """The majority class, and logistic regression on the flattened inputs (a linear model:
        what the network has to beat to justify itself)."""
        from sklearn.dummy import DummyClassifier
        from sklearn.linear_model import LogisticRegression

        train, test = data.split("train"), data.split("test")
        x_train = self.inputs(train).reshape(len(self.targets(train)), -1)
        x_test = self.inputs(test).reshape(len(self.targets(test)), -1)
        y_train = self.targets(train)
        predictions = {}
        for name, model in {
            "most_frequent": DummyClassifier(strategy="most_frequent"),
            "logistic_regression": LogisticRegression(max_iter=settings.logistic_max_iter, random_state=seed),
        }.items():
            proba = model.fit(x_train, y_train).predict_proba(x_test)
            predictions[name] = {"proba": proba[:, 1:] if self.binary else proba}
        return predictions

    def parity(self, reference: Predictions, exported: Predictions, atol: float) -> dict[str, Any]:
        same_labels = self.labels(reference["proba"]) == self.labels(exported["proba"])
        report = {
            "max_abs_diff": float(np.abs(reference["proba"] - exported["proba"]).max()),
            "argmax_agreement": float(same_labels.mean()),
            "identical_argmax": bool(same_labels.all()),
            "examples": int(len(same_labels)),
        }
        report["passed"] = report["identical_argmax"] and report["max_abs_diff"] <= atol
        return report

    def plot_definitions(self, project: str, variants: list[str]) -> list[dict[str, Any]]:
        definitions = training_curve_plots(project, variants, self.epoch_metric)
        if self.binary:
            for name, file, x, y in (("ROC", "roc.json", "fpr", "tpr"),
                                     ("precision-recall", "precision_recall.json", "recall", "precision")):
                definitions.append({f"{project} {name}": {
                    "template": "simple", "x": x, "y": {f"reports/{project}/{v}/plots/{file}": y for v in variants},
                }})
        for variant in variants:
            definitions.append({f"reports/{project}/{variant}/plots/confusion.json": {
                "template": "confusion", "x": "actual", "y": "predicted"}})
        if self.example_images:
            definitions += [f"reports/{project}/{variant}/plots/misclassified.png" for variant in variants]
        if self.example_texts is not None:
            definitions += [f"reports/{project}/{variant}/plots/confidently_wrong.png" for variant in variants]
        return definitions
