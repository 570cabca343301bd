"""Data validation with Great Expectations 1.x for the pipelines' ``validate`` stage.

Project modules describe their data as small pandas tables (one row per image, per class, or per
record; never one column per pixel) plus lists of ``gx.expectations.*`` objects.  This module runs
them through a real, in-memory (ephemeral) GX Data Context, optionally renders Data Docs, and turns
the results into a stable JSON report that DVC can version as a metric.  ``raise_for_failures``
then stops the pipeline with a message a person can act on without opening the docs.
"""
from __future__ import annotations

import copy
import math
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Stages run offline.  GX documents GX_ANALYTICS_ENABLED as its analytics switch; 1.24.1 ships no
# analytics client at all, but set it before the import anyway (the context config below also
# says analytics_enabled=False) so a later GX cannot send events from a pipeline stage.
os.environ["GX_ANALYTICS_ENABLED"] = "false"

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.core.run_identifier import RunIdentifier  # noqa: E402
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from curriculum.io import write_json  # noqa: E402

__all__ = [
    "DataValidationError",
    "validate_tables",
    "raise_for_failures",
    "image_summary_table",
    "rows_by_split",
    "class_count_table",
    "image_expectations",
    "tabular_expectations",
]

_SITE = "local_site"
_PARTIAL = 10  # offending values / row ids kept per failed expectation
_STATS = ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations")


class DataValidationError(ValueError):
    """Raised by :func:`raise_for_failures`; the message lists every failed expectation."""

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------- running suites


def validate_tables(
    suite_name: str,
    tables: dict[str, pd.DataFrame],
    expectations: dict[str, list],
    docs_dir: Path | None = None,
    *,
    report_path: Path | None = None,
) -> dict:
    """Validate each table against its expectations; return (and optionally write) a report.

    One ephemeral context holds a pandas data source with one dataframe asset, suite
    (``"<suite_name>.<table>"``), validation definition and checkpoint per table.  Failures are
    reported, not raised, so the stage can always write its metric and docs first.
    ``docs_dir`` receives a Data Docs site (``index.html``); it is built beside the target and
    swapped in, so stale pages from earlier runs never linger.
    """
    unknown = sorted(set(expectations) - set(tables))
    if unknown:
        raise KeyError(f"expectations given for unknown tables {unknown}; tables are {sorted(tables)}")
    docs_dir = Path(docs_dir) if docs_dir is not None else None
    if docs_dir is not None and docs_dir.exists() and any(docs_dir.iterdir()) \
            and not (docs_dir / "index.html").exists():
        raise FileExistsError(f"{docs_dir} is not empty and is not a Data Docs site; refusing to replace it")

    build_dir = None
    if docs_dir is not None:
        docs_dir.parent.mkdir(parents=True, exist_ok=True)
        build_dir = Path(tempfile.mkdtemp(prefix=f".{docs_dir.name}.", dir=docs_dir.parent))
    try:
        context = _ephemeral_context(build_dir)
        source = context.data_sources.add_pandas(name=suite_name)
        table_reports = {
            name: _validate_one(context, source, suite_name, name, df, expectations.get(name, []), build_dir)
            for name, df in tables.items()
        }
        if build_dir is not None:
            if not (build_dir / "index.html").exists():  # no checkpoint ran (no expectations at all)
                context.build_data_docs(site_names=[_SITE])
            _canonical_pages(build_dir)
            if docs_dir.exists():
                shutil.rmtree(docs_dir)
            os.replace(build_dir, docs_dir)
            docs_dir.chmod(0o755)  # mkdtemp made it private
    finally:
        if build_dir is not None and build_dir.exists():
            shutil.rmtree(build_dir)

    totals = {key: sum(t["statistics"][key] for t in table_reports.values()) for key in _STATS}
    totals["success_percent"] = _percent(totals["successful_expectations"], totals["evaluated_expectations"])
    report = {
        "suite": suite_name,
        "success": all(t["success"] for t in table_reports.values()),
        **totals,
        "statistics": dict(totals),
        "tables": table_reports,
    }
    if report_path is not None:
        write_json(report_path, report)
    return report


def raise_for_failures(report: dict) -> None:
    """Raise :class:`DataValidationError` naming every failed expectation of ``report``."""
    if report["success"]:
        return
    lines = [f"table {name!r}: {failure['message']}"
             for name, table in report["tables"].items() for failure in table["failed"]]
    header = (f"data validation suite {report['suite']!r} failed "
              f"{report['unsuccessful_expectations']} of {report['evaluated_expectations']} expectations:")
    raise DataValidationError("\n  ".join([header, *lines]), report)


# Data Docs are a DVC output: pages that embed the wall-clock time would get a new hash on every
# run and on every machine. The run is named and timed by this constant instead (the real time
# of a run is in git and DVC), and the other times in the pages (load time, cache busters) too.
_DOCS_RUN_ID = RunIdentifier(run_name="dvc-validate", run_time=datetime(2000, 1, 1, tzinfo=timezone.utc))
_TIMESTAMP = re.compile(r"\d{8}T\d{6}\.\d+Z")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _canonical_pages(site: Path) -> None:
    """Give every time in the pages the fixed run time, and number their random element ids in
    order of appearance (each id only links elements within its own page)."""
    for page in site.rglob("*.html"):
        numbers: dict[str, str] = {}
        text = _TIMESTAMP.sub(_DOCS_RUN_ID.to_tuple()[1], page.read_text(encoding="utf-8"))
        text = _UUID.sub(lambda match: numbers.setdefault(match.group(), f"id{len(numbers)}"), text)
        page.write_text(text, encoding="utf-8")


def _ephemeral_context(docs_dir: Path | None):
    """In-memory stores, no progress bars, no analytics, and at most one docs site we own."""
    sites = {}
    if docs_dir is not None:
        sites[_SITE] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _validate_one(context, source, suite_name, name, df, expectations, docs_dir) -> dict:
    stats = {**dict.fromkeys(_STATS, 0), "success_percent": 100.0}
    report = {"rows": int(len(df)), "success": True, "evaluated": 0, "failed": [], "statistics": stats}
    if not expectations:
        return report
    batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("all rows")
    # Copies: an expectation object may belong to one suite only, and callers reuse theirs.
    suite = context.suites.add(gx.ExpectationSuite(
        name=f"{suite_name}.{name}", expectations=[copy.copy(e) for e in expectations]))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite_name}.{name}", data=batch, suite=suite))
    actions = [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[_SITE])] if docs_dir else []
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"{suite_name}.{name}", validation_definitions=[definition], actions=actions,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": _PARTIAL}))
    result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=_DOCS_RUN_ID)
    (suite_result,) = result.run_results.values()

    order = {e.id: i for i, e in enumerate(suite.expectations)}  # GX reorders results; restore ours
    results = sorted(suite_result.results, key=lambda r: order.get(r.expectation_config.id, len(order)))
    report["failed"] = [_failure(r, len(df), list(df.columns)) for r in results if not r.success]
    stats["evaluated_expectations"] = len(results)
    stats["unsuccessful_expectations"] = len(report["failed"])
    stats["successful_expectations"] = len(results) - len(report["failed"])
    stats["success_percent"] = _percent(stats["successful_expectations"], len(results))
    report.update(success=not report["failed"], evaluated=len(results))
    return report


def _failure(result, rows: int, columns: list) -> dict:
    """A failed expectation as plain JSON plus the one-line message shown to people."""
    config = result.expectation_config
    kwargs = {k: _plain(v) for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    details = _plain(result.result or {})
    entry: dict[str, Any] = {"expectation": config.type, "kwargs": kwargs}
    call = f"{config.type}({', '.join(f'{k}={_short(v)}' for k, v in kwargs.items())})"

    column = kwargs.get("column")
    errors = _exception_messages(result.exception_info)
    if column is not None and column not in columns:  # GX's own errors here vary and can be cryptic
        errors = [f"column {column!r} does not exist in the table"]
    if errors:
        entry["exception"] = "; ".join(errors)
        entry["message"] = f"{call} could not be evaluated: {entry['exception']}"
        return entry
    if "unexpected_count" in details:  # a column map expectation: some rows are bad
        values = details.get("partial_unexpected_list", [])
        index = details.get("partial_unexpected_index_list", [])
        ids = [_short(i) for i in index]  # the DataFrame's index labels
        entry.update(unexpected_count=details["unexpected_count"],
                     element_count=details.get("element_count", rows),
                     partial_unexpected_list=values, partial_unexpected_index_list=index)
        text = f"{details['unexpected_count']} of {entry['element_count']} rows unexpected"
        if values and config.type != "expect_column_values_to_not_be_null":  # distinct, in GX's order
            text += ", e.g. " + ", ".join(list(dict.fromkeys(_short(v) for v in values))[:5])
        if ids:
            more = ", ..." if details["unexpected_count"] > min(5, len(ids)) else ""
            text += f" (row{'s' if len(ids) > 1 else ''} {', '.join(ids[:5])}{more})"
    else:  # a table/aggregate expectation: GX reports what it observed
        entry["observed_value"] = observed = details.get("observed_value")
        text = f"observed {_short(observed)}"
        expected = kwargs.get("column_list", kwargs.get("column_set"))
        if isinstance(expected, list) and isinstance(observed, list):
            missing = [c for c in expected if c not in observed]
            extra = [c for c in observed if c not in expected]
            text = (f"missing columns {_short(missing)}, unexpected columns {_short(extra)}"
                    if missing or extra else f"columns out of order: {_short(observed)}")
        elif details.get("details"):
            entry["details"] = details["details"]
            text += f" ({_short(details['details'], 300)})"
    entry["message"] = f"{call} failed: {text}"
    return entry


def _exception_messages(info: dict | None) -> list[str]:
    """GX gives either one flat exception_info or one per metric (keyed by metric id)."""
    if not info:
        return []
    infos = [info] if "raised_exception" in info else [i for i in info.values() if isinstance(i, dict)]
    return list(dict.fromkeys(str(i.get("exception_message")) for i in infos if i.get("raised_exception")))


def _short(value: Any, limit: int = 120) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        items = [_short(v) for v in value[:10]] + ([f"... ({len(value)} values)"] if len(value) > 10 else [])
        text = "[" + ", ".join(items) + "]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(value: Any) -> Any:
    """Builtin, strictly-JSON types only (numpy scalars unwrapped, NaN/inf spelled as strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if value is pd.NA or value is pd.NaT:
        return "nan"
    return str(value)


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 4) if whole else 100.0


# --------------------------------------------------------------------------- tables


def rows_by_split(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A raw data set's examples ``x``/``y`` and, when it publishes a test split, ``x_test``/``y_test``
    after them, with each row's split name (``train``/``test``), for tables covering both."""
    parts = [("train", data["x"], data["y"])]
    if "x_test" in data:
        parts.append(("test", data["x_test"], data["y_test"]))
    return (np.concatenate([x for _, x, _ in parts]), np.concatenate([y for _, _, y in parts]),
            np.concatenate([np.full(len(y), name) for name, _, y in parts]))


def image_summary_table(x: np.ndarray, y: np.ndarray, split: np.ndarray | None = None) -> pd.DataFrame:
    """One row per image (index = position in ``x``): label, split, shape, dtype, pixel range, NaN/inf count.

    ``x`` is NHWC, or NHW (then channels = 1).  Summaries keep the suites cheap and readable
    however large the images are; the min/max are over finite pixels (the non-finite ones are
    counted in ``nan_count``), and an image with no finite pixel gets min=+inf, max=-inf.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be NHW or NHWC, got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must be 1-D class indices, one per image; got shape {y.shape} for {len(x)} images")
    n = len(x)
    flat = x.reshape(n, -1)
    lo, hi, bad = np.empty(n), np.empty(n), np.zeros(n, dtype=np.int64)
    for start in range(0, n, 1024):  # chunks bound the temporary copies for large image sets
        rows, block = slice(start, start + 1024), flat[start:start + 1024]
        finite = np.isfinite(block) if np.issubdtype(block.dtype, np.inexact) else np.ones(block.shape, bool)
        bad[rows] = (~finite).sum(axis=1)
        lo[rows] = np.where(finite, block, np.inf).min(axis=1, initial=np.inf)
        hi[rows] = np.where(finite, block, -np.inf).max(axis=1, initial=-np.inf)
    return pd.DataFrame({
        "label": y,
        "split": np.asarray(split, dtype=str) if split is not None else "all",
        "height": x.shape[1],
        "width": x.shape[2],
        "channels": x.shape[3] if x.ndim == 4 else 1,
        "dtype": str(x.dtype),
        "pixel_min": lo,
        "pixel_max": hi,
        "nan_count": bad,
    })


def class_count_table(y: np.ndarray, split: np.ndarray | None = None, *, n_classes: int) -> pd.DataFrame:
    """One row per (split, class), zero counts included so an empty class shows up.

    The index reads ``"<split>/<class>"`` so failures name the split and class, not a row number.
    ``fraction`` is the class's share of all rows of its split.
    """
    y = np.asarray(y)
    split = np.asarray(split, dtype=str) if split is not None else np.full(len(y), "all")
    rows = []
    for s in sorted(set(split.tolist())):
        labels = y[split == s]
        for c in range(n_classes):
            count = int(np.sum(labels == c))
            rows.append({"split": s, "label": c, "count": count, "fraction": count / len(labels)})
    table = pd.DataFrame(rows, columns=["split", "label", "count", "fraction"])
    table.index = [f"{s}/{c}" for s, c in zip(table["split"], table["label"])]
    return table


# --------------------------------------------------------------------------- expectation builders


def image_expectations(
    height: int,
    width: int,
    channels: int,
    dtypes: list[str],
    pixel_range: tuple[float, float],
    n_classes: int,
    max_class_imbalance: float,
) -> dict[str, list]:
    """Expectations for the ``images`` (:func:`image_summary_table`) and ``class_counts``
    (:func:`class_count_table`) tables of an image-classification data set."""
    lo, hi = pixel_range
    b = max_class_imbalance
    return {
        "images": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[height]),
            gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[width]),
            gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[channels]),
            gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=list(dtypes)),
            gxe.ExpectColumnValuesToBeInSet(column="nan_count", value_set=[0]),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=lo, max_value=hi),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=lo, max_value=hi),
            # GX map expectations skip nulls, so a NaN label needs its own check.
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(n_classes))),
        ],
        "class_counts": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="count", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(
                column="fraction", min_value=(1 - b) / n_classes, max_value=(1 + b) / n_classes),
        ],
    }


def tabular_expectations(
    columns: dict[str, str],
    ranges: dict[str, tuple[float, float]],
    target: str,
    target_values: list,
) -> dict[str, list]:
    """Expectations for a single table ``table``: exact ordered columns and dtypes, no nulls,
    known target values and per-column ranges.  Failures name the offending rows by index."""
    exps: list = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(columns)),
    ]
    exps += [gxe.ExpectColumnValuesToBeOfType(column=c, type_=t) for c, t in columns.items()]
    exps += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns]
    exps.append(gxe.ExpectColumnValuesToBeInSet(column=target, value_set=list(target_values)))
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=lo, max_value=hi)
             for c, (lo, hi) in ranges.items()]
    return {"table": exps}
