"""Baselines every forecasting model is measured against, as pure functions on NumPy arrays.

Each takes the gap-free target series ``y`` (N,) in its own units and the forecast origins (row
indices, the same ones the neural models' windows use) and returns an (M, horizon) forecast in
those units. Nothing after an origin is used for its forecast; fitted baselines (climatology,
ridge, the statistical models) are fitted on the training rows only.
"""
from __future__ import annotations

import time

import numpy as np

from curriculum.projects.forecasting.series import future

SEASON = 365  # seasonal naive: the value one year (365 steps) before each target
CLIMATOLOGY_WINDOW = 31  # days in the circular moving average that smooths the day-of-year means
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)
# statsforecast class per baseline name; season_length 1 (no seasonal term): a yearly season of 365
# daily steps is beyond what AutoETS accepts and makes AutoARIMA's search slow.
STATISTICAL = {"auto_ets": "AutoETS", "auto_arima": "AutoARIMA"}


def persistence(y: np.ndarray, origin: np.ndarray, horizon: int, changes: bool = False) -> np.ndarray:
    """Every day of the horizon looks like today: y[t] for all steps. When ``y`` is a series of
    changes (log returns of a price), "nothing changes" is a change of 0: the random walk."""
    if changes:
        return np.zeros((len(origin), horizon))
    return np.repeat(y[origin][:, None], horizon, axis=1)


def seasonal_naive(y: np.ndarray, origin: np.ndarray, horizon: int, season: int = SEASON) -> np.ndarray:
    """Each target day looks like the same day one season earlier: y[t + k - season]."""
    if season < horizon:
        raise ValueError(f"season ({season}) must be at least the horizon ({horizon}) to use only the past")
    source = origin[:, None] + np.arange(1, horizon + 1) - season
    if source.min() < 0:
        raise ValueError(f"seasonal naive needs {season} steps of history before the first origin")
    return y[source]


def day_of_year(date: np.ndarray) -> np.ndarray:
    """0-based day of the year (0..365)."""
    date = np.asarray(date, dtype="datetime64[D]")
    return (date - date.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64)


def climatology_profile(y: np.ndarray, date: np.ndarray, window: int = CLIMATOLOGY_WINDOW) -> np.ndarray:
    """Mean of ``y`` for each of the 366 days of the year, smoothed by a circular moving average of
    ``window`` days (sums and counts averaged separately, so days seen once weigh as much as they
    count and 31 December neighbours 1 January). Two training years give a noisy raw mean per day;
    the average keeps the seasonal curve and drops the day-to-day weather."""
    if window % 2 != 1 or not 1 <= window < 366:
        raise ValueError(f"window must be an odd number of days below 366, got {window}")
    doy = day_of_year(date)
    half = window // 2

    def circular_sum(v: np.ndarray) -> np.ndarray:
        return np.convolve(np.concatenate([v[-half:], v, v[:half]]) if half else v, np.ones(window), "valid")

    counts = circular_sum(np.bincount(doy, minlength=366).astype(np.float64))
    if np.any(counts == 0):
        raise ValueError(f"a {window}-day window finds no training day for some days of the year")
    return circular_sum(np.bincount(doy, weights=y, minlength=366)) / counts


def climatology(y: np.ndarray, date: np.ndarray, train_rows: np.ndarray, origin: np.ndarray,
                horizon: int, window: int = CLIMATOLOGY_WINDOW) -> np.ndarray:
    """Each target day gets the smoothed mean of its day of the year over the training rows."""
    profile = climatology_profile(y[train_rows], date[train_rows], window)
    return profile[day_of_year(future(date, origin, horizon))]


def ridge(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
          x_test: np.ndarray, alphas=RIDGE_ALPHAS) -> tuple[np.ndarray, float]:
    """Linear autoregression: scikit-learn Ridge from the flattened input window to all horizon
    steps, fitted on the training windows; alpha is the one with the lowest validation MAE.
    Targets are in the series' units, so the forecasts are too. Returns (forecast, alpha)."""
    from sklearn.linear_model import Ridge

    def flat(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1)

    def predict(model, x: np.ndarray) -> np.ndarray:  # (M, horizon) even when horizon is 1
        return model.predict(flat(x)).reshape(len(x), -1)

    fits = {alpha: Ridge(alpha=alpha).fit(flat(x_train), y_train) for alpha in alphas}
    best = min(alphas, key=lambda alpha: np.abs(predict(fits[alpha], x_val) - y_val).mean())
    return predict(fits[best], x_test), float(best)


def statistical(name: str, y: np.ndarray, train_rows: np.ndarray, origin: np.ndarray, horizon: int,
                season_length: int = 1) -> np.ndarray:
    """statsforecast AutoETS / AutoARIMA, fitted once on the training rows, then run forward over
    the history up to each origin with the fitted parameters (``forward``: the model's filter, no
    re-estimation) -- refitting at every origin would cost a full model search each time."""
    from statsforecast import models

    model = getattr(models, STATISTICAL[name])(season_length=season_length)
    model.fit(y[train_rows])
    first = int(np.argmax(train_rows))
    return np.stack([model.forward(y=y[first:t + 1], h=horizon)["mean"] for t in origin])


def forecast_all(y: np.ndarray, date: np.ndarray, arrays: dict, *, horizon: int,
                 train_rows: np.ndarray, changes: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """Every baseline on the test origins of ``arrays`` (from ``series.make_splits``); ``changes``
    as in ``persistence`` (True for log returns).

    Returns the forecasts by name, each (M, horizon) in the units of ``y``, and an info dict with
    the chosen ridge alpha and the seconds each baseline took.
    """
    origin = arrays["origin_test"]
    makers = {
        "persistence": lambda: persistence(y, origin, horizon, changes),
        "seasonal_naive": lambda: seasonal_naive(y, origin, horizon),
        "climatology": lambda: climatology(y, date, train_rows, origin, horizon),
        "ridge": lambda: ridge(arrays["x_train"], future(y, arrays["origin_train"], horizon),
                               arrays["x_val"], future(y, arrays["origin_val"], horizon), arrays["x_test"]),
        **{name: lambda name=name: statistical(name, y, train_rows, origin, horizon) for name in STATISTICAL},
    }
    forecasts, info = {}, {"seconds": {}}
    for name, make in makers.items():
        start = time.perf_counter()
        forecasts[name] = make()
        info["seconds"][name] = round(time.perf_counter() - start, 3)
    forecasts["ridge"], info["ridge_alpha"] = forecasts["ridge"]
    return forecasts, info
