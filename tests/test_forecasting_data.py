"""Forecasting data: sources, gap rule, splits, windows, baselines, scores and validation.

The Seattle and stocks tests read the real files (pinned wheels fetched with ``pip download``);
the Jena downloader runs against a local HTTP server with a generated record.
"""
from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest

from curriculum.download import DownloadError
from curriculum.projects.forecasting import baselines, checks, scores, sources
from curriculum.projects.forecasting import series as fs
from tests.test_download import _serve, server  # noqa: F401  (server is a fixture)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    return tmp_path_factory.mktemp("wheels")


@pytest.fixture(scope="module")
def seattle(wheels):
    return sources.fetch_seattle(wheels, wheels / "partial")


@pytest.fixture(scope="module")
def seattle_filled(seattle):
    filled, _ = fs.fill_gaps(seattle, calendar="daily", method="linear", max_gap=3)
    return filled


def synthetic(n: int = 900, start: str = "2012-01-01", seed: int = 0) -> dict:
    """A gap-free daily series of two columns: a seasonal one and noise."""
    rng = np.random.default_rng(seed)
    date = np.arange(np.datetime64(start), np.datetime64(start) + n)
    seasonal = 10 + 8 * np.sin(2 * np.pi * np.arange(n) / 365.25) + rng.normal(0, 2, n)
    return {"date": date, "values": np.stack([seasonal, rng.normal(0, 1, n)], axis=1),
            "columns": np.array(["temp_max", "noise"])}


SYNTHETIC_SPLITS = {"train": ("2012-01-01", "2012-12-31"), "val": ("2013-01-01", "2013-06-30"),
                    "test": ("2013-07-01", "2014-06-18")}


# --------------------------------------------------------------------------- sources


def test_seattle_source_is_the_published_file(seattle):
    assert seattle["columns"].tolist() == ["precipitation", "temp_max", "temp_min", "wind"]
    assert seattle["date"].dtype == np.dtype("datetime64[D]") and seattle["values"].dtype == np.float64
    assert len(seattle["date"]) == 1461
    assert str(seattle["date"][0]) == "2012-01-01" and str(seattle["date"][-1]) == "2015-12-31"
    assert seattle["values"][0].tolist() == [0.0, 12.8, 5.0, 4.7]  # 2012/01/01,0.0,12.8,5.0,4.7,drizzle


def test_stocks_source_gives_adjusted_closes_aligned_on_dates(wheels):
    raw = sources.fetch_stocks(wheels, wheels / "partial")
    assert raw["columns"].tolist() == ["AAPL", "IBM", "MSFT"]
    assert raw["values"].shape == (3270, 3) and not np.isnan(raw["values"]).any()
    assert str(raw["date"][0]) == "2000-03-01" and str(raw["date"][-1]) == "2013-03-01"
    fs.check_dates(raw["date"])
    assert raw["values"][0, 0] == pytest.approx(4.186662803811)  # AAPL's Adj Close, not its Close 130.31
    # Adjusted: no split jump. Raw AAPL closes halve on 2000-06-21 (log return -0.69).
    returns = fs.log_returns(raw)
    assert returns["values"].shape == (3269, 3) and str(returns["date"][0]) == "2000-03-02"
    split_day = np.flatnonzero(returns["date"] == np.datetime64("2000-06-21"))[0]
    assert abs(returns["values"][split_day, 0]) < 2000  # basis points
    expected = 1e4 * np.log(raw["values"][1, 0] / raw["values"][0, 0])
    assert returns["values"][0, 0] == pytest.approx(expected)


JENA_HEADER = ("Date Time,p (mbar),T (degC),Tpot (K),Tdew (degC),rh (%),VPmax (mbar),VPact (mbar),"
               "VPdef (mbar),sh (g/kg),H2OC (mmol/mol),rho (g/m**3),wv (m/s),max. wv (m/s),wd (deg)")


def jena_zip() -> tuple[bytes, bytes]:
    """A generated record in the published layout: two days of readings, one failed wind reading."""
    rows = [JENA_HEADER]
    readings = [("01.01.2009 00:10:00", 996.5, -8.0, 90.0, 1.0), ("01.01.2009 12:00:00", 998.5, -2.0, 80.0, -9999.0),
                ("02.01.2009 00:00:00", 997.0, -9.5, 70.0, 3.0),  # closes 1 January
                ("02.01.2009 06:00:00", 990.0, 1.5, 60.0, 2.0)]
    for stamp, p, t, rh, wv in readings:
        rows.append(f"{stamp},{p},{t},265.4,-8.9,{rh},3.33,3.11,0.22,1.94,3.12,1307.75,{wv},1.75,152.3")
    csv = ("\n".join(rows) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(sources.JENA_MEMBER, csv)
    return buffer.getvalue(), csv


def test_jena_downloader_verifies_and_makes_daily_series(server, tmp_path, monkeypatch):  # noqa: F811
    body, csv = jena_zip()
    remote = _serve(server, "jena.zip", body, sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    monkeypatch.setattr(sources, "JENA_URL", remote.url)
    monkeypatch.setattr(sources, "JENA_SHA256", remote.sha256)
    monkeypatch.setattr(sources, "JENA_SIZE", remote.size)
    monkeypatch.setattr(sources, "JENA_MEMBER_SHA256", hashlib.sha256(csv).hexdigest())
    monkeypatch.setattr(sources, "JENA_MEMBER_SIZE", len(csv))
    monkeypatch.setattr(sources, "JENA_MIN_READINGS", 1)

    raw = sources.fetch_jena(tmp_path / "work", tmp_path / "partial")
    assert raw["columns"].tolist() == ["temp_max", "temp_min", "pressure", "humidity", "wind"]
    assert raw["date"].astype(str).tolist() == ["2009-01-01", "2009-01-02"]
    np.testing.assert_allclose(raw["values"][0], [-2.0, -9.5, 997.3333333, 80.0, 2.0])  # -9999 left out
    np.testing.assert_allclose(raw["values"][1], [1.5, 1.5, 990.0, 60.0, 2.0])
    monkeypatch.setattr(sources, "JENA_MIN_READINGS", 3)  # 1 January has 3 readings, 2 of them of wind
    partial = sources.fetch_jena(tmp_path / "work", tmp_path / "partial")["values"]
    assert np.isnan(partial[1]).all() and np.isnan(partial[0, 4]) and not np.isnan(partial[0, :4]).any()
    assert (tmp_path / "work" / sources.JENA_FILENAME).read_bytes() == body
    assert server.requests == [("/jena.zip", None)]

    monkeypatch.setattr(sources, "JENA_MEMBER_SHA256", "0" * 64)  # the zip verifies, its CSV does not
    with pytest.raises(DownloadError, match=f"member {sources.JENA_MEMBER} is {len(csv)} bytes"):
        sources.fetch_jena(tmp_path / "work", tmp_path / "partial")


def test_jena_downloader_refuses_a_corrupt_zip_and_an_unpinned_one(server, tmp_path, monkeypatch):  # noqa: F811
    body, _ = jena_zip()
    server.files["/jena.zip"] = body[:-1] + b"X"
    monkeypatch.setattr(sources, "JENA_URL", f"{server.url}/jena.zip")
    monkeypatch.setattr(sources, "JENA_SHA256", hashlib.sha256(body).hexdigest())
    monkeypatch.setattr(sources, "JENA_SIZE", len(body))
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        sources.fetch_jena(tmp_path / "work", tmp_path / "partial")
    assert not (tmp_path / "work" / sources.JENA_FILENAME).exists()

    monkeypatch.setattr(sources, "JENA_SHA256", None)
    with pytest.raises(DownloadError, match="no checksum is published"):
        sources.fetch_jena(tmp_path / "work", tmp_path / "partial")
    assert len(server.requests) == 1  # the unpinned call never reached the server


# --------------------------------------------------------------------------- gap rule


def drop_days(raw: dict, *positions: int) -> dict:
    keep = np.ones(len(raw["date"]), bool)
    keep[list(positions)] = False
    return {**raw, "date": raw["date"][keep], "values": raw["values"][keep]}


def test_gap_rule_fills_short_gaps_and_reports_them():
    raw = synthetic(40)
    gappy = drop_days(raw, 10, 11)
    gappy["values"] = gappy["values"].copy()
    gappy["values"][20, 1] = np.nan  # a missing value on a day that is present
    linear, report = fs.fill_gaps(gappy, calendar="daily", method="linear", max_gap=2)
    assert np.array_equal(linear["date"], raw["date"])
    v = raw["values"][:, 0]
    np.testing.assert_allclose(linear["values"][10:12, 0], v[9] + np.array([1, 2]) / 3 * (v[12] - v[9]))
    assert report["missing_steps"] == 2 and report["filled_values"] == 5
    assert {"column": "temp_max", "first": str(raw["date"][10]), "last": str(raw["date"][11]), "length": 2} \
        in report["gaps"]
    ffill, _ = fs.fill_gaps(gappy, calendar="daily", method="ffill", max_gap=2)
    assert ffill["values"][10:12, 0].tolist() == [v[9], v[9]]


def test_gap_rule_refuses_long_gaps_naming_column_and_dates():
    raw = drop_days(synthetic(40), 10, 11, 12)
    with pytest.raises(ValueError, match=r"temp_max 2012-01-11\.\.2012-01-13 \(3 steps\)"):
        fs.fill_gaps(raw, calendar="daily", method="linear", max_gap=2)
    leading = synthetic(10)
    leading["values"][0, 1] = np.nan  # nothing before it to carry forward
    with pytest.raises(ValueError, match=r"noise 2012-01-01\.\.2012-01-01"):
        fs.fill_gaps(leading, calendar="daily", method="ffill", max_gap=2)


def test_gap_rule_refuses_unsorted_or_duplicated_dates():
    raw = synthetic(10)
    with pytest.raises(ValueError, match="2012-01-03 -> 2012-01-03"):
        fs.fill_gaps({**raw, "date": raw["date"][[0, 1, 2, 2, 4, 5, 6, 7, 8, 9]]},
                     calendar="daily", method="linear", max_gap=1)
    with pytest.raises(ValueError, match="2012-01-05 -> 2012-01-04"):
        fs.fill_gaps({**raw, "date": raw["date"][[0, 1, 2, 4, 3, 5, 6, 7, 8, 9]]},
                     calendar="trading", method="linear", max_gap=1)


def test_trading_calendar_keeps_the_rows_as_steps():
    raw = drop_days(synthetic(20), 5, 6)  # a weekend, say: not missing data
    filled, report = fs.fill_gaps(raw, calendar="trading", method="ffill", max_gap=1)
    assert np.array_equal(filled["date"], raw["date"]) and report["missing_steps"] == 0


# --------------------------------------------------------------------------- splits, scaler, windows


def test_default_seattle_test_split_has_359_samples_at_horizon_7(seattle_filled):
    arrays, _ = fs.make_splits(seattle_filled, target="temp_max", lookback=14, horizon=7)
    assert arrays["x_test"].shape == (359, 14, 6) and arrays["x_test"].dtype == np.float32
    assert arrays["y_test"].shape == (359, 7)
    assert str(arrays["date_test"][0]) == "2014-12-31" and str(arrays["date_test"][-1]) == "2015-12-24"
    one_step, _ = fs.make_splits(seattle_filled, target="temp_max", lookback=14, horizon=1)
    assert len(one_step["y_test"]) == 365


def test_a_sample_belongs_to_a_split_only_when_all_its_targets_do(seattle_filled):
    horizon = 7
    arrays, _ = fs.make_splits(seattle_filled, target="temp_max", lookback=14, horizon=horizon)
    date = seattle_filled["date"]
    for name, (first, last) in fs.split_bounds(fs.DEFAULT_SPLITS).items():
        targets = fs.future(date, arrays[f"origin_{name}"], horizon)
        assert targets.min() >= first and targets.max() <= last
    # Origins 2013-12-25..30 would train on 2014 targets: they are in no split.
    used = np.concatenate([arrays[f"date_{name}"] for name in fs.SPLITS])
    straddling = np.arange(np.datetime64("2013-12-25"), np.datetime64("2013-12-31"))
    assert not np.isin(straddling, used).any()
    assert np.datetime64("2013-12-24") in used and np.datetime64("2013-12-31") in used


def test_split_bounds_must_be_ordered_and_disjoint():
    with pytest.raises(ValueError, match="ordered train < val < test"):
        fs.split_bounds({**fs.DEFAULT_SPLITS, "val": ("2013-12-01", "2014-12-31")})
    with pytest.raises(ValueError, match="exactly"):
        fs.split_bounds({"train": ("2012-01-01", "2013-12-31")})
    with pytest.raises(ValueError, match="split 'test' .* has no window"):
        fs.make_splits(synthetic(), target="temp_max", lookback=7, horizon=3,
                       bounds={**SYNTHETIC_SPLITS, "test": ("2014-07-01", "2014-12-31")})


def test_windows_never_see_the_future():
    raw = synthetic()
    arrays, scaler = fs.make_splits(raw, target="temp_max", lookback=10, horizon=3, bounds=SYNTHETIC_SPLITS)
    # Inputs are exactly the rows up to the origin: with features = row index, the last input of
    # every window is its origin and the first target comes after it.
    index = np.arange(len(raw["date"]), dtype=np.float64)[:, None]
    for name in fs.SPLITS:
        origin = arrays[f"origin_{name}"]
        steps = fs.windows(index, origin, 10)[..., 0]
        assert np.array_equal(steps[:, -1], origin) and np.array_equal(steps[:, 0], origin - 9)
        assert fs.future(index[:, 0], origin, 3).min(axis=1).tolist() == (origin + 1).tolist()
    # Changing every value after a test origin changes none of its inputs (it would if windows leaked).
    cut = len(arrays["origin_test"]) // 2
    changed = {**raw, "values": raw["values"].copy()}
    changed["values"][arrays["origin_test"][cut] + 1:] += 100.0
    again, again_scaler = fs.make_splits(changed, target="temp_max", lookback=10, horizon=3, bounds=SYNTHETIC_SPLITS)
    assert again_scaler == scaler
    assert np.array_equal(again["x_test"][:cut + 1], arrays["x_test"][:cut + 1])
    assert not np.array_equal(again["y_test"][cut], arrays["y_test"][cut])


def test_scaler_is_fitted_on_training_rows_only():
    raw = synthetic()
    arrays, scaler = fs.make_splits(raw, target="temp_max", lookback=10, horizon=3, bounds=SYNTHETIC_SPLITS)
    train = fs.rows_between(raw["date"], *fs.split_bounds(SYNTHETIC_SPLITS)["train"])
    np.testing.assert_allclose(scaler["mean"], raw["values"][train].mean(axis=0))
    np.testing.assert_allclose(scaler["scale"], raw["values"][train].std(axis=0))
    assert scaler["target"] == "temp_max" and scaler["target_mean"] == scaler["mean"][0]
    assert scaler["features"] == ["temp_max", "noise", "doy_sin", "doy_cos"]
    shifted = {**raw, "values": np.where(train[:, None], raw["values"], raw["values"] * 50 + 1e3)}
    assert fs.make_splits(shifted, target="temp_max", lookback=10, horizon=3, bounds=SYNTHETIC_SPLITS)[1] == scaler
    # Targets come back in degrees through the saved scaler.
    origin = arrays["origin_val"]
    np.testing.assert_allclose(fs.unscale_target(arrays["y_val"], scaler),
                               fs.future(raw["values"][:, 0], origin, 3), rtol=1e-5)


def test_calendar_features_put_the_year_on_a_circle():
    date = np.array(["2013-01-01", "2013-07-02", "2013-12-31", "2012-12-31"], dtype="datetime64[D]")
    features = fs.calendar_features(date)
    np.testing.assert_allclose(features[0], [0.0, 1.0], atol=1e-12)
    assert features[1, 1] < -0.99  # midsummer is opposite 1 January
    np.testing.assert_allclose(features[2], [np.sin(2 * np.pi * 364 / 365), np.cos(2 * np.pi * 364 / 365)])
    np.testing.assert_allclose(features[3], [np.sin(2 * np.pi * 365 / 366), np.cos(2 * np.pi * 365 / 366)])


# --------------------------------------------------------------------------- baselines


def test_persistence_and_seasonal_naive_on_seattle_by_hand(seattle_filled):
    arrays, _ = fs.make_splits(seattle_filled, target="temp_max", lookback=14, horizon=7)
    y, origin = seattle_filled["values"][:, 1], arrays["origin_test"]
    persistence = baselines.persistence(y, origin, 7)
    seasonal = baselines.seasonal_naive(y, origin, 7)
    assert persistence.shape == seasonal.shape == (359, 7)
    assert persistence[0].tolist() == [3.3] * 7  # temp_max on 2014-12-31
    assert seasonal[0].tolist() == [7.2, 10.6, 8.9, 7.8, 8.3, 7.8, 8.3]  # 2014-01-01..07
    assert fs.future(y, origin, 7)[-1].tolist() == [5.0, 4.4, 4.4, 5.0, 7.2, 5.6, 5.6]  # 2015-12-25..31
    assert baselines.persistence(y, origin, 7, changes=True).tolist() == np.zeros((359, 7)).tolist()
    with pytest.raises(ValueError, match="history"):
        baselines.seasonal_naive(y, np.array([100]), 7)


def test_climatology_is_the_smoothed_day_of_year_mean():
    date = np.arange(np.datetime64("2013-01-01"), np.datetime64("2015-01-01"))
    doy = baselines.day_of_year(date)
    y = np.where(doy < 182, 0.0, 10.0)  # a step in the middle of the year, the same both years
    profile = baselines.climatology_profile(y, date, window=3)
    assert profile[100] == 0.0 and profile[300] == 10.0
    assert profile[181] == pytest.approx(10 / 3)  # days 180 and 181 at 0, day 182 at 10
    assert profile[182] == pytest.approx(20 / 3)
    train = date < np.datetime64("2014-01-01")
    forecast = baselines.climatology(y, date, train, np.array([99, 400]), 2, window=3)
    assert forecast.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="odd"):
        baselines.climatology_profile(y, date, window=4)


def test_ridge_recovers_a_linear_autoregression_at_horizon_1():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4, 2)).astype(np.float32)
    y = (2.0 * x[:, -1, 0] - 0.5 * x[:, 0, 1] + 3.0)[:, None]  # (M, 1), exactly linear
    forecast, alpha = baselines.ridge(x[:200], y[:200], x[200:250], y[200:250], x[250:])
    assert forecast.shape == (50, 1) and alpha == min(baselines.RIDGE_ALPHAS)
    np.testing.assert_allclose(forecast, y[250:], atol=0.01)


def test_every_baseline_forecasts_the_same_origins_from_the_past_only():
    pytest.importorskip("statsforecast")
    raw = synthetic()
    arrays, _ = fs.make_splits(raw, target="temp_max", lookback=7, horizon=3, bounds=SYNTHETIC_SPLITS)
    train = fs.rows_between(raw["date"], *fs.split_bounds(SYNTHETIC_SPLITS)["train"])
    y = raw["values"][:, 0]
    forecasts, info = baselines.forecast_all(y, raw["date"], arrays, horizon=3, train_rows=train)
    assert sorted(forecasts) == sorted(["persistence", "seasonal_naive", "climatology", "ridge",
                                        "auto_ets", "auto_arima"])
    m = len(arrays["origin_test"])
    assert all(f.shape == (m, 3) and np.isfinite(f).all() for f in forecasts.values())
    assert info["ridge_alpha"] in baselines.RIDGE_ALPHAS and set(info["seconds"]) == set(forecasts)
    # Values after a test origin change no forecast made at or before it.
    cut = m // 2
    changed = {**raw, "values": raw["values"].copy()}
    changed["values"][arrays["origin_test"][cut] + 1:] -= 50.0
    arrays2, _ = fs.make_splits(changed, target="temp_max", lookback=7, horizon=3, bounds=SYNTHETIC_SPLITS)
    again, _ = baselines.forecast_all(changed["values"][:, 0], raw["date"], arrays2, horizon=3, train_rows=train)
    for name, forecast in forecasts.items():
        np.testing.assert_allclose(again[name][:cut + 1], forecast[:cut + 1], err_msg=name)


# --------------------------------------------------------------------------- scores


def test_scores_on_a_hand_computed_case():
    y_true = np.array([[1.0, 2.0], [3.0, 4.0]])
    y_pred = np.array([[2.0, 2.0], [1.0, 4.0]])
    naive = np.zeros((2, 2))
    scale = scores.naive_scale(np.array([1.0, 3.0, 2.0, 6.0]))
    assert scale == pytest.approx(7 / 3)
    result = scores.forecast_scores(y_true, y_pred, scale=scale, persistence=naive)
    assert result["mae"] == pytest.approx(0.75)
    assert result["rmse"] == pytest.approx(np.sqrt(1.25))
    assert result["mase"] == pytest.approx(0.75 / (7 / 3))
    assert result["skill"] == pytest.approx(1 - 0.75 / 2.5)
    assert result["mae_by_step"] == pytest.approx([1.5, 0.0])
    assert result["rmse_by_step"] == pytest.approx([np.sqrt(2.5), 0.0])
    assert result["skill_by_step"] == pytest.approx([1 - 1.5 / 2, 1.0])
    one_step = scores.forecast_scores(y_true[:, :1], y_pred[:, :1], scale=1.0, persistence=naive[:, :1])
    assert "mae_by_step" not in one_step and one_step["mae"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="constant"):
        scores.naive_scale(np.ones(5))


def test_compare_says_how_a_model_stands_against_each_baseline():
    table = scores.compare(2.0, {"persistence": 2.5, "ridge": 1.6})
    assert table["persistence"] == {"baseline_mae": 2.5, "difference": -0.5, "skill": pytest.approx(0.2),
                                    "better": True}
    assert table["ridge"]["better"] is False and table["ridge"]["skill"] == pytest.approx(-0.25)


# --------------------------------------------------------------------------- validation


def test_source_ranges_cover_every_column_of_their_source():
    assert list(checks.SOURCE_RANGES["seattle"]) == list(sources.SEATTLE_COLUMNS)
    assert list(checks.SOURCE_RANGES["stocks"]) == list(sources.TICKERS)
    assert list(checks.SOURCE_RANGES["jena"]) == list(sources.JENA_DAILY)


def validate(raw: dict, max_gap: int = 3) -> str:
    """The validation failure message for ``raw`` ('' when it passes)."""
    from curriculum.validation import DataValidationError, raise_for_failures, validate_tables

    tables, expectations = checks.validation(raw, ranges=checks.SOURCE_RANGES["seattle"],
                                             calendar="daily", method="linear", max_gap=max_gap)
    try:
        raise_for_failures(validate_tables("forecasting", tables, expectations))
    except DataValidationError as exc:
        return str(exc)
    return ""


def copy(raw: dict) -> dict:
    return {key: value.copy() for key, value in raw.items()}


@pytest.fixture(scope="module")
def gx():
    return pytest.importorskip("great_expectations")


def test_clean_seattle_series_passes_validation(gx, seattle):
    assert validate(seattle) == ""


def test_validation_names_unsorted_dates(gx, seattle):
    raw = copy(seattle)
    raw["date"][[10, 11]] = raw["date"][[11, 10]]
    message = validate(raw)
    assert "column='days_since_previous'" in message and "'2012-01-11'" in message
    assert message.count("failed:") == 1


def test_validation_names_duplicated_dates(gx, seattle):
    raw = copy(seattle)
    raw["date"][20] = raw["date"][19]
    message = validate(raw)
    assert "expect_column_values_to_be_unique(column='date')" in message
    assert "rows '2012-01-20', '2012-01-20'" in message


def test_validation_names_out_of_range_values_and_long_gaps(gx, seattle):
    raw = copy(seattle)
    raw["values"][30, 1] = 99.0  # temp_max on 2012-01-31
    raw["values"][40, 0] = -1.0  # precipitation on 2012-02-10
    raw["values"][50:55, 2] = np.nan  # temp_min missing 2012-02-20..24, longer than the rule allows
    message = validate(raw)
    assert "column='temp_max'" in message and "99 (row '2012-01-31')" in message
    assert "column='precipitation'" in message and "-1 (row '2012-02-10')" in message
    assert "'temp_min 2012-02-20..2012-02-24'" in message
    assert "expect_column_values_to_not_be_null(column='temp_min')" in message and "'2012-02-20'" in message
    assert validate(raw, max_gap=5).count("failed:") == 2  # the rule now allows the gap: it is filled
