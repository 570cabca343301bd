"""Forecast scores, as pure functions of (M, horizon) arrays in the target's own units.

MAE and RMSE say how far off a forecast is; MASE divides the MAE by the in-sample MAE of the
one-step naive forecast on the training series (Hyndman & Koehler 2006), so it compares across
series and units; skill versus persistence, 1 - MAE / MAE_persistence, says how much of the naive
forecast's error a model removes (0: none, negative: worse than doing nothing).
"""
from __future__ import annotations

import numpy as np


def mae(y_true: np.ndarray, y_pred: np.ndarray, axis=None):
    """Mean absolute error; ``axis=0`` gives one value per horizon step."""
    return np.mean(np.abs(np.asarray(y_pred) - np.asarray(y_true)), axis=axis)


def rmse(y_true: np.ndarray, y_pred: np.ndarray, axis=None):
    """Root mean squared error; ``axis=0`` gives one value per horizon step."""
    return np.sqrt(np.mean(np.square(np.asarray(y_pred) - np.asarray(y_true)), axis=axis))


def naive_scale(y_train: np.ndarray) -> float:
    """MASE's denominator: mean |y_t - y_{t-1}| over the training series (in-sample one-step naive MAE)."""
    scale = float(np.mean(np.abs(np.diff(np.asarray(y_train, dtype=np.float64)))))
    if not scale > 0:
        raise ValueError("the training series is constant: MASE is undefined")
    return scale


def skill(model_mae, reference_mae):
    """1 - MAE_model / MAE_reference: the share of the reference's error the model removes."""
    return 1.0 - np.asarray(model_mae) / np.asarray(reference_mae)


def forecast_scores(y_true: np.ndarray, y_pred: np.ndarray, *, scale: float,
                    persistence: np.ndarray) -> dict:
    """MAE, RMSE, MASE and skill versus the ``persistence`` forecast, over all steps, plus the same
    per horizon step (``..._by_step`` lists, step 1 first) when the horizon is longer than 1."""
    y_true, y_pred, persistence = (np.asarray(a, dtype=np.float64) for a in (y_true, y_pred, persistence))
    if not y_true.shape == y_pred.shape == persistence.shape or y_true.ndim != 2:
        raise ValueError(f"need (M, horizon) arrays of one shape; got truth {y_true.shape}, "
                         f"forecast {y_pred.shape}, persistence {persistence.shape}")
    scores = {"mae": float(mae(y_true, y_pred)), "rmse": float(rmse(y_true, y_pred))}
    scores["mase"] = scores["mae"] / scale
    scores["skill"] = float(skill(scores["mae"], mae(y_true, persistence)))
    if y_true.shape[1] > 1:
        by_step = mae(y_true, y_pred, axis=0)
        scores.update(mae_by_step=by_step.tolist(), rmse_by_step=rmse(y_true, y_pred, axis=0).tolist(),
                      mase_by_step=(by_step / scale).tolist(),
                      skill_by_step=skill(by_step, mae(y_true, persistence, axis=0)).tolist())
    return scores


def compare(model_mae: float, baseline_maes: dict[str, float]) -> dict[str, dict]:
    """How a model's MAE stands against each baseline's: the difference (negative = better), the
    skill over that baseline, and whether the model beats it."""
    return {
        name: {"baseline_mae": float(base), "difference": float(model_mae - base),
               "skill": float(skill(model_mae, base)), "better": bool(model_mae < base)}
        for name, base in baseline_maes.items()
    }
