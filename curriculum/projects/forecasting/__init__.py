"""Time-series forecasting: LSTM, GRU and attention models in Keras and PyTorch, always scored
beside naive and statistical baselines on exactly the same test windows.

Default data: real daily Seattle weather 2012-2015 (vega_datasets 0.9.0's CSV, read out of the
pinned wheel); the target is ``temp_max`` over the next ``horizon`` days, from a ``lookback``-day
window of all four weather columns plus day-of-year sin/cos. Chronological splits (train
2012-2013, val 2014, test 2015); a window belongs to a split only when all its targets do.
Second source: daily adjusted closes of AAPL/IBM/MSFT (bokeh-sampledata), modelled as log returns
in basis points (prices themselves leave the training range). Full-size: the Jena climate record,
made daily.

Modules: ``sources`` (fetching), ``checks`` (great-expectations tables), ``series`` (gap rule,
splits, scalers, windows), ``baselines``, ``scores``, ``task`` (what the stages ask) and
``serving`` (what a user asks a served model).
"""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from curriculum.config import NonNegativeInt, PositiveInt, ProjectConfig, Section, TrainConfig
from curriculum.layout import Arrays, ProcessedData
from curriculum.projects.base import DataSource, Project
from curriculum.projects.forecasting import series, sources
from curriculum.projects.forecasting.scores import naive_scale
from curriculum.projects.forecasting.serving import ForecastOrigin
from curriculum.projects.forecasting.task import Forecast

# A property of each source, not a choice: markets close at weekends, the weather does not.
SOURCE_CALENDAR = {"seattle": "daily", "stocks": "trading", "jena": "daily"}


# --------------------------------------------------------------------------- params


class ForecastValidate(Section):
    """The declared gap rule: runs of at most ``max_gap`` missing steps are filled by ``fill``;
    a longer run fails validation naming the column and its dates."""

    fill: Literal["ffill", "linear"]
    max_gap: NonNegativeInt


DateRange = Annotated[list[str], Field(min_length=2, max_length=2)]


class SplitDates(Section):
    """Inclusive first and last dates (YYYY-MM-DD) of each split, in time order."""

    train: DateRange
    val: DateRange
    test: DateRange


class ForecastPreprocess(Section):
    target: str
    transform: Literal["level", "log_return"]  # log_return: 1e4 ln(p_t / p_t-1), basis points (prices)
    lookback: PositiveInt  # days of history in each window
    horizon: PositiveInt  # days ahead one model predicts, all at once
    splits: SplitDates


class ForecastTrain(TrainConfig):
    units: PositiveInt
    layers: PositiveInt
    dropout: Annotated[float, Field(ge=0, lt=1)]
    heads: PositiveInt  # attention heads (the attention model only; must divide units)
    loss: Literal["mse", "mae", "huber"]


class ForecastEvaluate(Section):
    plot_step: PositiveInt  # which horizon step the forecast-vs-actual plot draws


class ForecastingConfig(ProjectConfig):
    validate_: ForecastValidate = Field(alias="validate")  # `validate` is a pydantic method name
    preprocess: ForecastPreprocess
    train: ForecastTrain
    evaluate: ForecastEvaluate


# --------------------------------------------------------------------------- stages


def validation(raw: Arrays, config: ForecastingConfig):
    from curriculum.projects.forecasting.checks import SOURCE_RANGES, validation as series_checks

    return series_checks(raw, ranges=SOURCE_RANGES[config.download.source],
                         calendar=SOURCE_CALENDAR[config.download.source],
                         method=config.validate_.fill, max_gap=config.validate_.max_gap)


def preprocess(raw: Arrays, config: ForecastingConfig) -> ProcessedData:
    """Gap rule, optional returns, chronological windows; scalers fitted on the training rows only
    (kept as the fitted ``input_scaler``/``output_scaler``, which export folds into the models)."""
    settings = config.preprocess
    filled, gap_report = series.fill_gaps(raw, calendar=SOURCE_CALENDAR[config.download.source],
                                          method=config.validate_.fill, max_gap=config.validate_.max_gap)
    returns = settings.transform == "log_return"
    if returns:
        filled = series.log_returns(filled)
    bounds = settings.splits.model_dump()
    arrays, scaler = series.make_splits(filled, target=settings.target, lookback=settings.lookback,
                                        horizon=settings.horizon, bounds=bounds)
    target = filled["values"][:, scaler["columns"].index(settings.target)]
    train_rows = series.rows_between(filled["date"], *series.split_bounds(bounds)["train"])
    splits = {}
    for name in series.SPLITS:
        origin = arrays[f"origin_{name}"]
        y_true = series.future(target, origin, settings.horizon)
        splits[name] = {
            "x": arrays[f"x_{name}"], "y": arrays[f"y_{name}"], "y_true": y_true, "origin": origin,
            "date": arrays[f"date_{name}"],
            # the naive forecast of the same origins: tomorrow as today (a zero return for returns)
            "persistence": np.zeros_like(y_true) if returns else np.repeat(target[origin][:, None], settings.horizon, 1),
        }
    n_calendar = len(series.CALENDAR_FEATURES)
    return ProcessedData(
        splits=splits,
        info={"target": settings.target, "transform": settings.transform, "features": scaler["features"],
              "mase_scale": naive_scale(target[train_rows]), "gaps": gap_report},
        fitted={
            "input_scaler": {"mean": np.array(scaler["mean"] + [0.0] * n_calendar, dtype=np.float32),
                             "scale": np.array(scaler["scale"] + [1.0] * n_calendar, dtype=np.float32)},
            "output_scaler": {"mean": np.array([scaler["target_mean"]], dtype=np.float32),
                              "scale": np.array([scaler["target_scale"]], dtype=np.float32)},
            # the whole preprocessed target series: the statistical baselines fit and roll on it
            "history": {"date": filled["date"], "target": target, "train_rows": train_rows},
        },
    )


def forecast_baselines(data: ProcessedData, config: ForecastingConfig) -> dict[str, dict[str, np.ndarray]]:
    """Persistence, seasonal naive, climatology, ridge on the window, AutoETS and AutoARIMA, on the
    test origins every model is scored on."""
    from curriculum.projects.forecasting.baselines import forecast_all

    history = data.fitted["history"]
    arrays = {f"{key}_{name}": data.split(name)[key] for name in series.SPLITS for key in ("x", "origin")}
    forecasts, info = forecast_all(history["target"], history["date"], arrays, horizon=config.preprocess.horizon,
                                   train_rows=history["train_rows"], changes=config.preprocess.transform == "log_return")
    print(f"forecasting baselines: ridge alpha {info['ridge_alpha']}, seconds {info['seconds']}")
    return {name: {"forecast": forecast} for name, forecast in forecasts.items()}


PROJECT = Project(
    name="forecasting",
    task=Forecast(),
    config=ForecastingConfig,
    sources={
        "seattle": DataSource("real daily Seattle weather 2012-2015, vega_datasets 0.9.0 wheel "
                              "(pip download, sha256-verified; 1,461 days)", sources.fetch_seattle),
        "stocks": DataSource("real daily adjusted closes of AAPL, IBM and MSFT 2000-2013, bokeh-sampledata "
                             "2026.1 wheel (pip download, sha256-verified)", sources.fetch_stocks),
        "jena": DataSource("the Jena climate record 2009-2016 (10-minute readings, made daily), "
                           "downloaded and verified", sources.fetch_jena),
    },
    validation=validation,
    preprocess=preprocess,
    models={
        name: {"keras": f"curriculum.models.keras_forecast:build_{name}",
               "torch": f"curriculum.models.torch_forecast:build_{name}"}
        for name in ("lstm", "gru", "attention")
    },
    custom_baselines=forecast_baselines,
    serving=ForecastOrigin(SOURCE_CALENDAR),
    smoke={"train.epochs": 2},
)
