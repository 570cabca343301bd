"""Where the forecasting project's series come from: the only module of the project that reads files.

Every source returns the raw daily series as plain arrays, kept exactly as published (order,
duplicates and gaps included, so that validation sees them):

* ``date``: ``datetime64[D]``, shape (N,)
* ``values``: ``float64``, shape (N, C)
* ``columns``: ``str``, shape (C,)

(no object arrays, so the dict saves with ``np.savez`` and loads without pickle).
"""
from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from curriculum.download import DownloadError, RemoteFile, download, fetch_pypi_file, read_archive_member

if TYPE_CHECKING:
    import pandas as pd  # the fetchers import it: only the download stage reads tables

# --------------------------------------------------------------------------- Seattle (default)

# vega_datasets 0.9.0 from the package index; the sha256 is the one the index publishes for the
# wheel (and what `pip download --no-deps vega_datasets==0.9.0` fetched). Never installed.
VEGA_WHEEL = {
    "package": "vega_datasets",
    "version": "0.9.0",
    "filename": "vega_datasets-0.9.0-py3-none-any.whl",
    "sha256": "3d7c63917be6ca9b154b565f4779a31fedce57b01b5b9d99d8a34a7608062a1d",
}
SEATTLE_MEMBER = "vega_datasets/_data/seattle-weather.csv"
# precipitation in mm, temperatures in degC, wind in m/s (the file's own units); `weather` is a label.
SEATTLE_COLUMNS = ("precipitation", "temp_max", "temp_min", "wind")

# --------------------------------------------------------------------------- stocks

# bokeh-sampledata 2026.1 (Quandl WIKI prices, public domain): sha256 as published by the index for
# the wheel and checked on `pip download --no-deps bokeh-sampledata==2026.1`. Never installed.
BOKEH_WHEEL = {
    "package": "bokeh-sampledata",
    "version": "2026.1",
    "filename": "bokeh_sampledata-2026.1-py3-none-any.whl",
    "sha256": "f40331a40ca30c64a1c1471835aad9006b61b0d9731a3f649ee8cbbf48d3822f",
}
STOCKS_MEMBER = "bokeh_sampledata/_data/stocks.csv.gz"
TICKERS = ("AAPL", "IBM", "MSFT")

# --------------------------------------------------------------------------- Jena climate

JENA_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/jena_climate_2009_2016.csv.zip"
JENA_FILENAME = "jena_climate_2009_2016.csv.zip"
# Size: 13,568,290 bytes, the length keras.utils.get_file reported when downloading JENA_URL in the
# rendered TensorFlow tutorial https://www.tensorflow.org/tutorials/structured_data/time_series
# ("13568290/13568290"). No sha256 or md5 of the zip is published, and none could be found in public
# code (searched for keras get_file file_hash, pooch registries, DVC and Git LFS pins of the zip);
# this machine cannot reach the URL to record one. Until a digest is pinned here, fetch_jena refuses
# to download rather than accept whatever the server returns.
JENA_SIZE = 13_568_290
JENA_SHA256: str | None = None
# The CSV inside the zip: sha256 and size from the Git LFS pointer of the copy committed to
# github.com/dax44/AMLM (commit 2e30af9d0636914ebef7965d5db76a56dc0286e6, jena_climate_2009_2016.csv).
# One third-party copy, not a publisher's checksum: a mismatch names both digests.
JENA_MEMBER = "jena_climate_2009_2016.csv"
JENA_MEMBER_SHA256 = "eb3df9da6c25039f10814ded0a14138bb0afa3612be9cf79cafdf1cf6f95172e"
JENA_MEMBER_SIZE = 43_153_776
# The record marks failed wind readings with -9999 (the only negative wind speeds in it).
JENA_MISSING = -9999.0
# Daily series from the 10-minute record: column -> (raw column, daily aggregate). Units: degC, degC,
# mbar, %, m/s. A reading is stamped at the end of its 10 minutes, so 00:00 closes the previous day.
JENA_DAILY = {
    "temp_max": ("T (degC)", "max"),
    "temp_min": ("T (degC)", "min"),
    "pressure": ("p (mbar)", "mean"),
    "humidity": ("rh (%)", "mean"),
    "wind": ("wv (m/s)", "mean"),
}
# A day needs three quarters of its 144 readings; with fewer its max, min or mean would describe part
# of the day only, so it is left missing (NaN) for the declared gap rule to fill or refuse.
JENA_MIN_READINGS = 108


def raw_series(date, values, columns) -> dict[str, np.ndarray]:
    """The common raw format, with dtypes enforced so every source saves and validates alike.
    Copies: pandas 3 hands out read-only views of its data."""
    return {
        "date": np.array(date, dtype="datetime64[D]"),
        "values": np.array(values, dtype=np.float64),
        "columns": np.array(columns, dtype=str),
    }


def fetch_seattle(work_dir: Path, partial_dir: Path) -> dict[str, np.ndarray]:
    """Daily Seattle weather 2012-2015 read out of the pinned vega_datasets wheel."""
    import pandas as pd

    wheel = fetch_pypi_file(dest_dir=work_dir, **VEGA_WHEEL)
    frame = pd.read_csv(io.BytesIO(read_archive_member(wheel, SEATTLE_MEMBER)))
    date = pd.to_datetime(frame["date"], format="%Y/%m/%d")  # an unexpected format fails here
    return raw_series(date.to_numpy(), frame[list(SEATTLE_COLUMNS)].to_numpy(), SEATTLE_COLUMNS)


def fetch_stocks(work_dir: Path, partial_dir: Path) -> dict[str, np.ndarray]:
    """Adjusted closes of AAPL, IBM and MSFT (USD), one column each, aligned on trading dates.

    Adjusted, not raw, close: the raw series jump at splits (AAPL 2000-06-21 and 2005-02-28,
    MSFT 2003-02-18). A date missing for one ticker stays NaN, for validation to report.
    """
    import pandas as pd

    wheel = fetch_pypi_file(dest_dir=work_dir, **BOKEH_WHEEL)
    frame = pd.read_csv(io.BytesIO(gzip.decompress(read_archive_member(wheel, STOCKS_MEMBER))))
    frame = frame[frame["Ticker"].isin(TICKERS)]
    prices = frame.pivot(index="Date", columns="Ticker", values="Adj Close")[list(TICKERS)]
    date = pd.to_datetime(prices.index, format="%Y-%m-%d")
    return raw_series(date.to_numpy(), prices.to_numpy(), TICKERS)


def fetch_jena(work_dir: Path, partial_dir: Path) -> dict[str, np.ndarray]:
    """The Jena climate record 2009-2016 (10-minute readings), downloaded, verified and made daily.

    Daily maximum and minimum of T, daily means of pressure, humidity and wind speed (see
    JENA_DAILY); wind readings of -9999 (sensor failures) are left out.
    """
    if JENA_SHA256 is None:
        raise DownloadError(
            f"{JENA_URL}: no checksum is published for this file, so none is pinned yet; download it "
            f"once where it is reachable, check it is {JENA_SIZE} bytes and its member "
            f"{JENA_MEMBER} has sha256 {JENA_MEMBER_SHA256}, then pin the zip's sha256 in JENA_SHA256"
        )
    remote = RemoteFile(url=JENA_URL, filename=JENA_FILENAME, sha256=JENA_SHA256, size=JENA_SIZE)
    data = read_archive_member(download(remote, work_dir, partial_dir), JENA_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != JENA_MEMBER_SIZE or digest != JENA_MEMBER_SHA256:
        raise DownloadError(
            f"{JENA_FILENAME}: member {JENA_MEMBER} is {len(data)} bytes with sha256 {digest}; "
            f"expected {JENA_MEMBER_SIZE} bytes with sha256 {JENA_MEMBER_SHA256}"
        )
    import pandas as pd

    return jena_daily(pd.read_csv(io.BytesIO(data)))


def jena_daily(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Aggregate the 10-minute Jena table to the daily series of JENA_DAILY; a day with fewer than
    JENA_MIN_READINGS valid readings of a column is NaN in that column."""
    import pandas as pd

    stamp = pd.to_datetime(frame["Date Time"], format="%d.%m.%Y %H:%M:%S")
    raw = frame[sorted({column for column, _ in JENA_DAILY.values()})]
    raw = raw.mask(raw == JENA_MISSING)
    days = raw.groupby((stamp - pd.Timedelta(minutes=10)).dt.normalize())
    daily = pd.DataFrame({name: days[column].agg(how).where(days[column].count() >= JENA_MIN_READINGS)
                          for name, (column, how) in JENA_DAILY.items()})
    return raw_series(daily.index.to_numpy(), daily.to_numpy(), list(JENA_DAILY))
