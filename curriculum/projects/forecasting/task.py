"""Multi-step forecasting: one model predicts every step of the horizon from a window.

Each split holds ``x`` (windows, scaled), ``y`` (targets, scaled: what the models learn),
``y_true`` (targets in the series' units), ``persistence`` (the naive forecast of the same
origins) and ``date`` (each origin's date). A prediction is ``{"forecast": (n, horizon)}``; the
stages hand the task predictions already mapped back to the series' units (through the fitted
``output_scaler``), so models and baselines are scored alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from curriculum.layout import ProcessedData
from curriculum.projects.forecasting import scores
from curriculum.tasks.base import Evaluation, Predictions, Task, training_curve_plots


@dataclass(frozen=True)
class Forecast(Task):
    output_names = ("forecast",)
    epoch_metric = "mae"  # in scaled units during training; the test metrics are in the series' units
    epoch_metric_higher_is_better = False
    headline = "mae"
    higher_is_better = False

    def table_metrics(self) -> tuple[str, ...]:
        return (self.headline, "rmse", "mase", "skill")

    def model_spec(self, data: ProcessedData) -> dict[str, Any]:
        train = data.split("train")
        _, lookback, n_features = train["x"].shape
        return {"lookback": int(lookback), "n_features": int(n_features), "horizon": int(train["y"].shape[1])}

    # ------------------------------------------------------------------ torch

    def torch_loss(self, train: Any) -> Callable[[Any, Any], Any]:
        from torch import nn

        return {"mse": nn.MSELoss, "mae": nn.L1Loss, "huber": nn.HuberLoss}[train.loss]()

    def torch_targets(self, y: np.ndarray) -> Any:
        import torch

        return torch.as_tensor(y, dtype=torch.float32)

    def torch_metric(self, raw_output: Any, target: Any) -> Any:
        """Each window's absolute error, averaged over the horizon."""
        return (raw_output - target).abs().mean(dim=1)

    def torch_head(self) -> Any:
        from torch import nn

        return nn.Identity()

    # ------------------------------------------------------------------ Keras

    def keras_compile(self, train: Any) -> dict[str, Any]:
        return {"loss": {"mse": "mean_squared_error", "mae": "mean_absolute_error", "huber": "huber"}[train.loss],
                "metrics": ["mae"]}

    # ------------------------------------------------------------------ evaluation

    def score(self, data: ProcessedData, predictions: Predictions, split: str = "test") -> dict[str, Any]:
        arrays = data.split(split)
        return scores.forecast_scores(arrays["y_true"], predictions["forecast"], scale=data.info["mase_scale"],
                                      persistence=arrays["persistence"])

    def evaluate(
        self, data: ProcessedData, predictions: Predictions, settings: Any, baselines: Mapping[str, dict[str, Any]]
    ) -> Evaluation:
        test = data.split("test")
        metrics = self.score(data, predictions)
        metrics["vs_baselines"] = scores.compare(metrics["mae"], {name: s["mae"] for name, s in baselines.items()})
        step = min(settings.plot_step, test["y_true"].shape[1]) - 1
        target_dates = test["date"] + np.timedelta64(step + 1, "D")
        forecast = [
            {"date": str(day), "actual": float(actual), "forecast": float(predicted), "persistence": float(naive)}
            for day, actual, predicted, naive in zip(
                target_dates, test["y_true"][:, step], predictions["forecast"][:, step], test["persistence"][:, step],
                strict=True)
        ]
        by_step = [
            {"step": index + 1, "mae": float(mae), "persistence_mae": float(naive)}
            for index, (mae, naive) in enumerate(zip(
                scores.mae(test["y_true"], predictions["forecast"], axis=0),
                scores.mae(test["y_true"], test["persistence"], axis=0), strict=True))
        ]
        return Evaluation(metrics, {"forecast.json": forecast, "error_by_step.json": by_step})

    def parity(self, reference: Predictions, exported: Predictions, atol: float) -> dict[str, Any]:
        """Forecasts within ``atol`` in the series' units (the exported model answers in them)."""
        difference = float(np.abs(reference["forecast"] - exported["forecast"]).max())
        return {"max_abs_diff": difference, "examples": int(len(reference["forecast"])), "passed": difference <= atol}

    def plot_definitions(self, project: str, variants: list[str]) -> list[dict[str, Any]]:
        definitions = training_curve_plots(project, variants, self.epoch_metric)
        definitions.append({f"{project} test MAE by horizon step": {
            "x": "step", "y": {f"reports/{project}/{v}/plots/error_by_step.json": "mae" for v in variants}}})
        definitions += [{f"reports/{project}/{v}/plots/forecast.json": {
            "x": "date", "y": ["actual", "forecast", "persistence"]}} for v in variants]
        return definitions
