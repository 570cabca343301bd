"""What a task owns: everything that differs between kinds of problem.

The stages and the framework back ends are wiring; they ask the project's task for the model's
inputs and targets, the loss and epoch metric in each framework, what a prediction is (named
arrays), the test metrics and plots, the baselines, and the export parity rule. A task never
imports a framework at module level: its torch/Keras methods import their framework when
called, so a Keras stage never loads torch and the reverse.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from curriculum.layout import Arrays, ProcessedData

Predictions = dict[str, np.ndarray]


@dataclass
class Evaluation:
    """A scored model: metrics (a DVC metric file) and plots, each a list of records (JSON, for
    DVC's templates) or PNG bytes, keyed by file name."""

    metrics: dict[str, Any]
    plots: dict[str, list[dict[str, Any]] | bytes] = field(default_factory=dict)


class Task(ABC):
    """The task interface; see :mod:`curriculum.tasks.classification` and ``.regression``."""

    #: names of the arrays a prediction returns (and of the exported graph's outputs)
    output_names: tuple[str, ...]
    #: the metric logged each epoch beside the loss (``train/<name>``, ``eval/<name>``)
    epoch_metric: str
    #: whether a higher epoch metric is better (for ``train.monitor: metric``)
    epoch_metric_higher_is_better: bool
    #: the test metric a person reads first, and whether higher is better
    headline: str
    higher_is_better: bool
    #: whether :meth:`evaluate` also takes the validation split's predictions (``val_predictions``),
    #: for a test score that depends on a choice made on validation (a detector's score threshold)
    scores_with_validation: bool = False

    def table_metrics(self) -> tuple[str, ...]:
        """The test metrics a results table shows for every model and baseline, headline first."""
        return (self.headline,)

    # ------------------------------------------------------------------ data

    def inputs(self, split: Arrays) -> np.ndarray:
        """The model's input array of one split (dtype kept: float images, integer token ids...)."""
        return split["x"]

    def targets(self, split: Arrays) -> np.ndarray:
        return split["y"]

    def epoch_batches(self, split: Arrays, epoch: int, train: Any, seed: int) -> tuple[np.ndarray, ...] | None:
        """For a task whose training inputs change every epoch (augmentation): epoch ``epoch``'s
        (1-based) inputs, aligned with ``split``'s targets, and the order to train on them in (an
        int array of example indices, cut into mini-batches of ``train.batch_size`` by the back
        end; targets and sample weights are indexed with it too), and, third, the epoch's own
        targets when augmentation moves them (a detector's boxes). Computed with NumPy from
        ``(seed, epoch)`` only, so every framework trains on the same batches in the same order
        and a resumed run regenerates the same epochs. None (the default): the split's own
        inputs, shuffled by the back end."""
        return None

    @abstractmethod
    def model_spec(self, data: ProcessedData) -> dict[str, Any]:
        """What a model builder needs to know about the data (shapes, number of outputs...)."""

    # ------------------------------------------------------------------ training, per framework

    @abstractmethod
    def torch_loss(self, train: Any) -> Callable[[Any, Any], Any]:
        """``loss(raw_output, target) -> scalar tensor``, on the module's raw output (logits...)."""

    @abstractmethod
    def torch_targets(self, y: np.ndarray) -> Any:
        """Targets as the torch loss wants them."""

    @abstractmethod
    def torch_metric(self, raw_output: Any, target: Any) -> Any:
        """The epoch metric of each example of a batch, as a float tensor (the loop averages it)."""

    @abstractmethod
    def torch_head(self) -> Any:
        """An ``nn.Module`` turning the raw output into the prediction (kept in the exported graph)."""

    @abstractmethod
    def keras_compile(self, train: Any) -> dict[str, Any]:
        """``loss`` and ``metrics`` for ``model.compile`` (the Keras model holds its own head)."""

    def keras_targets(self, y: np.ndarray) -> np.ndarray:
        return y

    def sample_weights(self, y: np.ndarray, train: Any) -> np.ndarray | None:
        """Per-example loss weights (class weighting), or None."""
        return None

    def numpy_objective(self, train: Any) -> Any:
        """The loss the from-scratch NumPy back end minimises (``loss``, ``grad`` on logits)."""
        raise NotImplementedError(f"{type(self).__name__} has no NumPy objective")

    # ------------------------------------------------------------------ evaluation and export

    @abstractmethod
    def score(self, data: ProcessedData, predictions: Predictions, split: str = "test") -> dict[str, Any]:
        """Metrics of predictions on a split (models and baselines alike)."""

    @abstractmethod
    def evaluate(
        self, data: ProcessedData, predictions: Predictions, settings: Any, baselines: Mapping[str, dict[str, Any]]
    ) -> Evaluation:
        """Test metrics (with how the model compares with each baseline) and plots."""

    def baselines(self, data: ProcessedData, settings: Any, seed: int) -> dict[str, Predictions]:
        """Test-split predictions of the reference methods every model is compared with."""
        return {}

    @abstractmethod
    def parity(self, reference: Predictions, exported: Predictions, atol: float) -> dict[str, Any]:
        """Compare the trained model with its export; the report's ``passed`` says if they agree."""

    @abstractmethod
    def plot_definitions(self, project: str, variants: list[str]) -> list[dict[str, Any]]:
        """The ``plots:`` entries of ``dvc.yaml`` for this task's files (generated by ``pipeline sync``)."""

    # ------------------------------------------------------------------ serving

    def serving_card(self, data: ProcessedData) -> dict[str, Any]:
        """What the server needs to read this task's outputs (class names...), for ``serving.json``."""
        return {}

    def answers(self, predictions: Predictions, card: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One answer per example, as a served model returns it: the named outputs as lists."""
        rows = len(next(iter(predictions.values())))
        return [{name: np.asarray(value[i]).tolist() for name, value in predictions.items()} for i in range(rows)]

    def compare(self, metrics: Mapping[str, Any], baselines: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        """How the headline metric compares with each baseline's: the difference, signed so that
        positive means better than the baseline."""
        sign = 1.0 if self.higher_is_better else -1.0
        return {
            name: {
                self.headline: float(scores[self.headline]),
                "better_by": float(sign * (metrics[self.headline] - scores[self.headline])),
            }
            for name, scores in baselines.items()
        }


def training_curve_plots(project: str, variants: list[str], metric: str) -> list[dict[str, Any]]:
    """Loss and epoch-metric curves of every variant, train and validation, from DVCLive's files."""
    def curves(name: str, splits: tuple[str, ...]) -> dict[str, Any]:
        return {
            f"{project} {name}": {
                "x": "step",
                "y": {
                    f"reports/{project}/{variant}/train/plots/metrics/{split}/{name}.tsv": name
                    for variant in variants for split in splits
                },
            }
        }
    return [curves("loss", ("train", "eval")), curves(metric, ("train", "eval"))]
