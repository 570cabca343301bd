"""What a raw daily series must satisfy, as Great Expectations tables and expectations.

Every table is indexed by date (ISO ``YYYY-MM-DD``), so a failed expectation names the column and
the dates of the offending rows. Three tables:

* ``series``: the rows as published: dates unique and strictly increasing, values within the
  physical range of their column (NaN values are gaps, checked below);
* ``gaps``: one row per run of missing values on the declared calendar (sorted, deduplicated
  dates), each at most the rule's ``max_gap`` steps long;
* ``filled``: the series after the declared imputation: no NaN left.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from curriculum.projects.forecasting.series import gap_runs, impute, on_calendar
from curriculum.projects.forecasting.sources import TICKERS

# Physical bounds, not fitted to the data: the coldest and hottest air temperatures ever measured at
# the surface are about -89 and +57 degC; precipitation, wind speed and humidity cannot be negative,
# humidity cannot exceed 100 %, station pressure at low altitude stays within 800..1100 mbar
# (sea-level records: 870 and 1084); a price is positive.
TEMPERATURE = {"min_value": -90.0, "max_value": 60.0}
NON_NEGATIVE = {"min_value": 0.0}
SOURCE_RANGES = {
    "seattle": {"precipitation": NON_NEGATIVE, "temp_max": TEMPERATURE, "temp_min": TEMPERATURE,
                "wind": NON_NEGATIVE},
    "stocks": {ticker: {"min_value": 0.0, "strict_min": True} for ticker in TICKERS},
    "jena": {"temp_max": TEMPERATURE, "temp_min": TEMPERATURE,
             "pressure": {"min_value": 800.0, "max_value": 1100.0},
             "humidity": {"min_value": 0.0, "max_value": 100.0}, "wind": NON_NEGATIVE},
}


def series_table(raw: dict) -> pd.DataFrame:
    """The raw rows in their published order: ``date``, ``days_since_previous`` (NaN on the first
    row; 0 for a duplicate, negative where the order goes back) and one column per series column."""
    date = np.asarray(raw["date"], dtype="datetime64[D]")
    step = np.concatenate([[np.nan], np.diff(date).astype(np.int64).astype(np.float64)])
    table = pd.DataFrame(raw["values"], columns=[str(c) for c in raw["columns"]], index=date.astype(str))
    table.insert(0, "days_since_previous", step)
    table.insert(0, "date", date.astype(str))
    return table


def regular_series(raw: dict, calendar: str) -> dict:
    """The series on its calendar after sorting and dropping repeated dates (first row kept), so
    gaps can be reported even for data that fails the ordering checks."""
    date = np.asarray(raw["date"], dtype="datetime64[D]")
    _, first = np.unique(date, return_index=True)  # np.unique sorts
    return on_calendar({**raw, "date": date[first], "values": raw["values"][first]}, calendar)


def gap_table(regular: dict) -> pd.DataFrame:
    """One row per run of missing values (index ``<column> <first>..<last>``): column, first and last
    date, length in steps."""
    runs = pd.DataFrame(gap_runs(regular), columns=["column", "first", "last", "length"])
    runs.index = [f"{r.column} {r.first}..{r.last}" for r in runs.itertuples()]
    return runs


def filled_table(regular: dict, method: str, max_gap: int) -> pd.DataFrame:
    """The series after the declared imputation, indexed by date; what is still NaN was not allowed."""
    filled = impute(regular, method, max_gap)
    return pd.DataFrame(filled["values"], columns=[str(c) for c in filled["columns"]],
                        index=filled["date"].astype(str))


def validation(raw: dict, *, ranges: dict[str, dict], calendar: str, method: str,
               max_gap: int) -> tuple[dict[str, pd.DataFrame], dict[str, list]]:
    """Tables and expectations for ``curriculum.validation.validate_tables``: ordering, duplicates,
    ``ranges`` (column -> ExpectColumnValuesToBeBetween arguments, e.g. SOURCE_RANGES[source]),
    gaps against the declared rule (``calendar``, ``method``, ``max_gap``) and no NaN after it.

    Great Expectations is imported here, not at module level: it takes seconds to load.
    """
    from curriculum.validation import gxe

    columns = [str(c) for c in raw["columns"]]
    unknown = sorted(set(ranges) - set(columns))
    if unknown:
        raise ValueError(f"ranges given for unknown columns {unknown}; columns are {columns}")
    regular = regular_series(raw, calendar)
    tables = {"series": series_table(raw), "gaps": gap_table(regular),
              "filled": filled_table(regular, method, max_gap)}
    expectations = {
        "series": [
            gxe.ExpectTableRowCountToBeBetween(min_value=2),
            gxe.ExpectColumnValuesToBeUnique(column="date"),
            gxe.ExpectColumnValuesToBeBetween(column="days_since_previous", min_value=1),
            *(gxe.ExpectColumnValuesToBeBetween(column=column, **bounds) for column, bounds in ranges.items()),
        ],
        "gaps": [gxe.ExpectColumnValuesToBeBetween(column="length", max_value=max_gap)],
        "filled": [gxe.ExpectColumnValuesToNotBeNull(column=column) for column in columns],
    }
    return tables, expectations
