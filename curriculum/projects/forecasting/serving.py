"""Serving a forecaster: a user names a forecast origin (a date of the served series) or gives a
recent window of their own, and gets the next ``horizon`` values with their dates.

The card holds the series the model was trained and scored on, as the exported model reads it
(after the gap rule and the target transform, in the data's own units, calendar features
included): a forecast from a date of the test split is exactly the one the evaluation scored.
"""
from __future__ import annotations

from datetime import date as Date
from typing import Annotated, Any, Mapping

import numpy as np
from pydantic import BaseModel, Field, ValidationInfo, create_model, field_validator

from curriculum.layout import ProcessedData
from curriculum.projects.forecasting import series
from curriculum.serving import Interface, Strict


def served_rows(data: ProcessedData, lookback: int) -> tuple[int, np.ndarray, np.ndarray]:
    """The model-input rows of the series (raw units), rebuilt from every split's windows: the
    index of the first row any window covers, the rows from there to the last covered one (NaN
    where no window reaches: a gap between splits), and the indices of the origins whose whole
    ``lookback`` window is covered (the dates a user may forecast from)."""
    dates = data.fitted["history"]["date"]
    rows = np.full((len(dates), data.split("train")["x"].shape[2]), np.nan)
    for name in series.SPLITS:
        split = data.split(name)
        rows[split["origin"][:, None] + np.arange(1 - lookback, 1)] = data.raw_inputs(split["x"])
    covered = ~np.isnan(rows).any(axis=1)
    whole = np.convolve(covered, np.ones(lookback), mode="full")[:len(covered)] == lookback  # rows t-lookback+1..t
    first, last = int(np.argmax(covered)), int(len(covered) - 1 - np.argmax(covered[::-1]))
    return first, rows[first:last + 1], np.flatnonzero(whole)


def step_dates(origin: np.datetime64, known: np.ndarray, calendar: str, steps: int) -> np.ndarray:
    """The dates of the ``steps`` steps after ``origin``: the served series' own next dates where it
    has them, then the calendar's (every day, or business days for a trading calendar)."""
    following = known[known > origin][:steps]
    last = following[-1] if len(following) else origin
    missing = steps - len(following)
    if calendar == "trading":
        extra = np.busday_offset(last, np.arange(1, missing + 1), roll="forward")
    else:
        extra = last + np.arange(1, missing + 1)
    return np.concatenate([following, extra.astype("datetime64[D]")])


def window_dates(origin: np.datetime64, lookback: int, calendar: str) -> np.ndarray:
    """The dates of a user's window ending at ``origin`` (business days for a trading calendar)."""
    if calendar == "trading":
        return np.busday_offset(origin, np.arange(1 - lookback, 1), roll="backward").astype("datetime64[D]")
    return origin + np.arange(1 - lookback, 1)


class ForecastOrigin(Interface):
    """``{"origin": "2015-06-01"}``: forecast the steps after that date from the served series; or
    ``{"origin": ..., "window": [[...], ...]}``: from the ``lookback`` most recent rows of your own,
    one value per feature column (calendar features are computed from the dates)."""

    widget = "forecast"

    def __init__(self, calendars: Mapping[str, str]):
        self.calendars = calendars  # source -> "daily" | "trading"

    def card(self, data: ProcessedData, config: Any, model: str) -> dict[str, Any]:
        settings = config.preprocess
        history = data.fitted["history"]
        first, rows, origins = served_rows(data, settings.lookback)
        dates = np.asarray(history["date"], dtype="datetime64[D]")
        n_calendar = len(series.CALENDAR_FEATURES)
        return {
            "target": settings.target, "transform": settings.transform, "lookback": settings.lookback,
            "horizon": settings.horizon, "calendar": self.calendars[config.download.source],
            "columns": list(data.info["features"][:-n_calendar]), "calendar_features": list(series.CALENDAR_FEATURES),
            "dates": [str(d) for d in dates], "target_values": [float(v) for v in history["target"]],
            "rows_start": first, "rows": [[None if np.isnan(v) else float(v) for v in row] for row in rows],
            "origins": [str(dates[i]) for i in origins],
            "first_origin": str(dates[origins[0]]), "last_origin": str(dates[origins[-1]]),
        }

    def request_model(self, card: Mapping[str, Any], max_batch: int) -> type[BaseModel]:
        lookback, columns = card["lookback"], card["columns"]
        value = Annotated[float, Field(allow_inf_nan=False)]
        row = Annotated[list[value], Field(min_length=len(columns), max_length=len(columns))]
        window = Annotated[list[row], Field(min_length=lookback, max_length=lookback, description=(
            f"the {lookback} most recent rows, oldest first, ending at `origin`; columns {', '.join(columns)}"))]

        origins = frozenset(card["origins"])

        def origin_in_series(origin: Date, info: ValidationInfo) -> Date:
            # "window" missing from info.data: it was given but is invalid, and its own error says why
            if "window" in info.data and info.data["window"] is None and origin.isoformat() not in origins:
                raise ValueError(f"{origin} is not a date the served series can forecast from: without a `window`, "
                                 f"pick one from {card['first_origin']} to {card['last_origin']} with {lookback} steps "
                                 f"of history (on a trading calendar, a trading day)")
            return origin

        return create_model(
            "ForecastRequest", __base__=Strict,
            window=(window | None, None),
            origin=(Date, Field(description="the last observed date; the forecast is for the steps after it")),
            __validators__={"origin_in_series": field_validator("origin")(origin_in_series)},
        )

    def prepare(self, card: Mapping[str, Any], artifacts: Mapping[str, Any]) -> dict[str, Any]:
        """The card's series as arrays and lookups, made once per loaded model."""
        return {"rows": np.array(card["rows"], dtype=np.float32), "dates": np.asarray(card["dates"], dtype="datetime64[D]"),
                "index": {date: i for i, date in enumerate(card["dates"])},
                "actual": dict(zip(card["dates"], card["target_values"]))}

    def model_inputs(self, request: BaseModel, card: Mapping[str, Any], prepared: Any) -> np.ndarray:
        origin, lookback = np.datetime64(request.origin, "D"), card["lookback"]
        if request.window is None:
            end = prepared["index"][str(origin)] - card["rows_start"]
            return prepared["rows"][end - lookback + 1: end + 1][None]
        dates = window_dates(origin, lookback, card["calendar"])
        window = np.concatenate([np.asarray(request.window, dtype=np.float64), series.calendar_features(dates)], axis=1)
        return window.astype(np.float32)[None]

    def answers(self, task: Any, request: BaseModel, predictions: Mapping[str, np.ndarray],
                card: Mapping[str, Any], prepared: Any) -> list[dict[str, Any]]:
        """The forecast by date, what actually happened where the series knows it, and the
        ``lookback`` observed values before the origin (the page draws them all)."""
        origin = np.datetime64(request.origin, "D")
        forecast = np.asarray(predictions["forecast"], dtype=np.float64)[0]
        dates = step_dates(origin, prepared["dates"], card["calendar"], len(forecast))
        actual = prepared["actual"]
        if request.window is not None:  # the user's own history: their target column
            column = card["columns"].index(card["target"])
            observed = [str(d) for d in window_dates(origin, len(request.window), card["calendar"])]
            history = dict(zip(observed, (row[column] for row in request.window)))
        else:
            end = prepared["index"][str(origin)]
            history = {d: actual[d] for d in card["dates"][max(end - card["lookback"] + 1, 0): end + 1]}
        return [{
            "target": card["target"], "transform": card["transform"], "origin": str(origin),
            "forecast": [{"date": str(d), "value": float(v), "actual": None if request.window is not None
                          else actual.get(str(d))} for d, v in zip(dates, forecast)],
            "history": [{"date": d, "value": v} for d, v in history.items()],
        }]

    def example(self, card: Mapping[str, Any]) -> dict[str, Any]:
        return {"origin": card["last_origin"]}
