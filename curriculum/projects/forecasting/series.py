"""Turning a raw daily series into model-ready windows, as pure functions on NumPy arrays.

A *series* is the dict that ``sources`` returns: ``date`` (N,) ``datetime64[D]``, ``values`` (N, C)
``float64`` and ``columns`` (C,). The steps, in the order preprocess runs them:

1. ``fill_gaps``: the declared gap rule (put on a calendar, fill short gaps, refuse long ones);
2. ``log_returns``: optional target transform for prices;
3. ``make_splits``: chronological split by date, scaler fitted on the training rows only,
   day-of-year features, and windows in which a sample belongs to a split only when all of its
   targets fall inside that split's dates (otherwise a 2013 training window would be scored on
   2014 targets).
"""
from __future__ import annotations

import numpy as np

# Chronological splits of the default (Seattle) data, inclusive date bounds.
DEFAULT_SPLITS = {
    "train": ("2012-01-01", "2013-12-31"),
    "val": ("2014-01-01", "2014-12-31"),
    "test": ("2015-01-01", "2015-12-31"),
}
SPLITS = ("train", "val", "test")
# daily: one step per calendar day, a missing day is a gap. trading: the rows are the steps (markets
# close at weekends and on holidays; those days are not missing data), only NaN values are gaps.
CALENDARS = ("daily", "trading")
FILL_METHODS = ("ffill", "linear")
CALENDAR_FEATURES = ("doy_sin", "doy_cos")


# --------------------------------------------------------------------------- gaps


def check_dates(date: np.ndarray) -> None:
    """Refuse dates that are not strictly increasing, naming the first offending ones."""
    date = np.asarray(date, dtype="datetime64[D]")
    step = np.diff(date).astype(np.int64)
    bad = np.flatnonzero(step <= 0)
    if bad.size:
        pairs = ", ".join(f"{date[i]} -> {date[i + 1]}" for i in bad[:5])
        raise ValueError(f"dates must be strictly increasing (no duplicates, sorted); {bad.size} "
                         f"step(s) are not: {pairs}{', ...' if bad.size > 5 else ''}")


def on_calendar(series: dict, calendar: str) -> dict:
    """The series with one row per step of ``calendar``: on ``daily``, every day from the first
    to the last date, the missing ones as NaN rows."""
    if calendar not in CALENDARS:
        raise ValueError(f"calendar must be one of {CALENDARS}, got {calendar!r}")
    date = np.asarray(series["date"], dtype="datetime64[D]")
    check_dates(date)
    if calendar == "trading":
        return dict(series)
    days = np.arange(date[0], date[-1] + 1)
    values = np.full((len(days), series["values"].shape[1]), np.nan)
    values[(date - date[0]).astype(np.int64)] = series["values"]
    return {**series, "date": days, "values": values}


def gap_runs(series: dict) -> list[dict]:
    """Every run of consecutive NaN values, per column: first and last date and length in steps."""
    runs = []
    for j, column in enumerate(series["columns"]):
        for start, stop in _nan_runs(np.isnan(series["values"][:, j])):
            runs.append({"column": str(column), "first": str(series["date"][start]),
                         "last": str(series["date"][stop - 1]), "length": int(stop - start)})
    return runs


def impute(series: dict, method: str, max_gap: int) -> dict:
    """Fill each NaN run of at most ``max_gap`` steps by ``method``; leave the others NaN.

    ``ffill`` repeats the last value before the run; ``linear`` interpolates between the values on
    either side. A run the method cannot bridge (leading, or trailing for ``linear``) stays NaN.
    """
    if method not in FILL_METHODS:
        raise ValueError(f"fill method must be one of {FILL_METHODS}, got {method!r}")
    values = series["values"].copy()
    n = len(values)
    for j in range(values.shape[1]):
        column = values[:, j]
        for start, stop in _nan_runs(np.isnan(column)):
            if stop - start > max_gap or start == 0 or (method == "linear" and stop == n):
                continue
            if method == "ffill":
                column[start:stop] = column[start - 1]
            else:
                weight = np.arange(1, stop - start + 1) / (stop - start + 1)
                column[start:stop] = column[start - 1] + weight * (column[stop] - column[start - 1])
    return {**series, "values": values}


def fill_gaps(series: dict, *, calendar: str, method: str, max_gap: int) -> tuple[dict, dict]:
    """Apply the declared gap rule; return the gap-free series and a JSON-able report.

    Raises ``ValueError`` naming the column and the dates of every gap the rule does not allow.
    """
    regular = on_calendar(series, calendar)
    runs = gap_runs(regular)
    filled = impute(regular, method, max_gap)
    left = gap_runs(filled)
    if left:
        listed = "; ".join(f"{r['column']} {r['first']}..{r['last']} ({r['length']} steps)" for r in left[:10])
        raise ValueError(f"{len(left)} gap(s) not allowed by the rule ({method}, at most {max_gap} "
                         f"step(s) on the {calendar} calendar, bridged on both sides): {listed}")
    report = {"calendar": calendar, "method": method, "max_gap": max_gap,
              "missing_steps": len(regular["date"]) - len(series["date"]),
              "filled_values": sum(r["length"] for r in runs), "gaps": runs}
    return filled, report


def _nan_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a boolean vector."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


# --------------------------------------------------------------------------- transforms and features


def log_returns(series: dict) -> dict:
    """Prices to daily log returns in basis points, 1e4 * ln(p_t / p_{t-1}); one row shorter.

    Returns are roughly stationary where price levels are not: test prices lie outside the
    training range, so a model of levels extrapolates and fails.
    """
    prices = series["values"]
    if not np.all(prices > 0):
        raise ValueError("log returns need strictly positive prices")
    return {**series, "date": series["date"][1:], "values": 1e4 * np.diff(np.log(prices), axis=0)}


def calendar_features(date: np.ndarray) -> np.ndarray:
    """Day of year on the unit circle, (N, 2) [sin, cos], so 31 December sits next to 1 January."""
    date = np.asarray(date, dtype="datetime64[D]")
    year = date.astype("datetime64[Y]")
    day = (date - year.astype("datetime64[D]")).astype(np.float64)
    length = ((year + 1).astype("datetime64[D]") - year.astype("datetime64[D]")).astype(np.float64)
    angle = 2 * np.pi * day / length
    return np.stack([np.sin(angle), np.cos(angle)], axis=1)


def fit_scaler(values: np.ndarray, rows: np.ndarray) -> dict[str, list[float]]:
    """Mean and standard deviation of each column over ``rows`` (the training rows) only, as
    plain lists so the scaler saves as JSON. A constant column gets scale 1 instead of 0."""
    fitted = values[rows]
    mean, scale = fitted.mean(axis=0), fitted.std(axis=0)
    scale = np.where(scale > 1e-12 * np.maximum(np.abs(mean), 1.0), scale, 1.0)
    return {"mean": mean.tolist(), "scale": scale.tolist()}


def apply_scaler(values: np.ndarray, scaler: dict) -> np.ndarray:
    """Standardise every column with the saved (training) mean and scale."""
    return (values - np.asarray(scaler["mean"])) / np.asarray(scaler["scale"])


def unscale_target(y: np.ndarray, scaler: dict) -> np.ndarray:
    """Model outputs (scaled target) back to the target's units."""
    return np.asarray(y) * scaler["target_scale"] + scaler["target_mean"]


# --------------------------------------------------------------------------- splits and windows


def split_bounds(bounds: dict) -> dict[str, tuple[np.datetime64, np.datetime64]]:
    """Inclusive (first, last) dates of train, val and test, checked to be ordered and disjoint."""
    if sorted(bounds) != sorted(SPLITS):
        raise ValueError(f"split bounds must name exactly {SPLITS}, got {sorted(bounds)}")
    parsed = {name: tuple(np.datetime64(d, "D") for d in bounds[name]) for name in SPLITS}
    previous_end = None
    for name in SPLITS:
        first, last = parsed[name]
        if first > last or (previous_end is not None and first <= previous_end):
            raise ValueError(f"split bounds must be ordered train < val < test without overlap; "
                             f"got {({k: tuple(map(str, v)) for k, v in parsed.items()})}")
        previous_end = last
    return parsed


def rows_between(date: np.ndarray, first: np.datetime64, last: np.datetime64) -> np.ndarray:
    """Boolean mask of the rows dated first..last (inclusive)."""
    return (date >= first) & (date <= last)


def origins(date: np.ndarray, *, lookback: int, horizon: int, first, last) -> np.ndarray:
    """Indices t of the forecast origins of one split: inputs are rows t-lookback+1..t, targets
    rows t+1..t+horizon, and all targets must be dated first..last (inputs may be older)."""
    if lookback < 1 or horizon < 1:
        raise ValueError(f"lookback and horizon must be >= 1, got {lookback} and {horizon}")
    t = np.arange(lookback - 1, len(date) - horizon)
    return t[(date[t + 1] >= first) & (date[t + horizon] <= last)]


def future(y: np.ndarray, origin: np.ndarray, horizon: int) -> np.ndarray:
    """(M, horizon) values of ``y`` at steps 1..horizon after each origin: the targets."""
    return y[origin[:, None] + np.arange(1, horizon + 1)]


def windows(features: np.ndarray, origin: np.ndarray, lookback: int) -> np.ndarray:
    """(M, lookback, F) float32 inputs: the ``lookback`` rows ending at each origin, nothing later."""
    return features[origin[:, None] + np.arange(1 - lookback, 1)].astype(np.float32)


def make_splits(series: dict, *, target: str, lookback: int, horizon: int,
                bounds: dict = DEFAULT_SPLITS) -> tuple[dict[str, np.ndarray], dict]:
    """Windows of a gap-free series for train/val/test, and the scaler fitted on train rows.

    Features: every column standardised with the training rows' mean and scale, then day-of-year
    sin/cos. Targets: the target column, standardised the same way (``unscale_target`` undoes it).
    Returns ``x_<split>`` (M, lookback, F) float32, ``y_<split>`` (M, horizon) float32,
    ``origin_<split>`` (row index of each origin) and ``date_<split>`` (its date); and the scaler
    (plain lists: JSON).
    """
    columns = [str(c) for c in series["columns"]]
    if target not in columns:
        raise ValueError(f"target {target!r} is not a column; columns are {columns}")
    date, values = series["date"], series["values"]
    check_dates(date)
    parsed = split_bounds(bounds)
    split_origins = {}
    for name, (first, last) in parsed.items():
        split_origins[name] = origins(date, lookback=lookback, horizon=horizon, first=first, last=last)
        if split_origins[name].size == 0:
            raise ValueError(f"split {name!r} ({first}..{last}) has no window with lookback {lookback} "
                             f"and horizon {horizon} in data {date[0]}..{date[-1]}")
    scaler = fit_scaler(values, rows_between(date, *parsed["train"]))
    j = columns.index(target)
    scaler.update(columns=columns, features=columns + list(CALENDAR_FEATURES), target=target,
                  target_mean=scaler["mean"][j], target_scale=scaler["scale"][j])
    features = np.concatenate([apply_scaler(values, scaler), calendar_features(date)], axis=1)
    arrays = {}
    for name, origin in split_origins.items():
        arrays[f"x_{name}"] = windows(features, origin, lookback)
        arrays[f"y_{name}"] = future(features[:, j], origin, horizon).astype(np.float32)
        arrays[f"origin_{name}"] = origin
        arrays[f"date_{name}"] = date[origin]
    return arrays, scaler
