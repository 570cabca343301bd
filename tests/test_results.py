"""The results table (end of run, flow artifact, report) and the report's figures."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from curriculum import report
from curriculum.results import (
    BASELINE, ReportFiles, ResultRow, ResultsTable, project_results, ranked, render_markdown, render_text,
    timing_record,
)
from curriculum.tasks.classification import Classification

TASK = Classification(binary=True)
VARIANTS = {"torch": SimpleNamespace(framework="torch"), "numpy": SimpleNamespace(framework="numpy")}


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


@pytest.fixture()
def reports(tmp_path):
    files = ReportFiles(tmp_path / "reports" / "p")
    for variant, accuracy in (("torch", 0.90), ("numpy", 0.95)):
        write(files.metrics(variant), {"accuracy": accuracy, "balanced_accuracy": 0.5, "roc_auc": 0.7, "loss": 0.3})
        write(files.train_summary(variant), {"step": 9})
        write(files.export(variant), {"passed": variant == "numpy", "max_abs_diff": 0.25})
    write(files.baselines(), {"most_frequent": {"accuracy": 0.6, "loss": 13.0}})
    return files


def test_rows_are_ranked_by_the_headline_with_baselines_among_them(reports):
    table = project_results("p", TASK, VARIANTS, reports.root)
    assert [(row.name, row.kind) for row in table.rows] == [
        ("numpy", "numpy"), ("torch", "torch"), ("most_frequent", BASELINE)]
    assert table.columns == ("accuracy", "balanced_accuracy", "roc_auc", "loss")
    numpy_row = table.rows[0]
    assert numpy_row.epochs == 10 and numpy_row.parity == "ok 2e-01"
    assert table.rows[1].parity == "FAIL 2e-01"  # a failed parity check is shown as such


def test_lower_is_better_ranks_ascending_and_rows_without_the_metric_go_last():
    rows = [ResultRow("a", "x", {"mae": 3.0}), ResultRow("b", "x", {}), ResultRow("c", "x", {"mae": 1.0})]
    assert [row.name for row in ranked(rows, "mae", higher_is_better=False)] == ["c", "a", "b"]


def test_training_time_is_shown_only_for_the_results_it_measured(reports):
    summary = reports.train_summary("torch")
    write(reports.train_timing("torch"), timing_record(83.25, None, summary))
    row = {r.name: r for r in project_results("p", TASK, VARIANTS, reports.root).rows}["torch"]
    assert row.train_seconds == pytest.approx(83.2, abs=0.1)
    assert "1m23.2s" in render_text(project_results("p", TASK, VARIANTS, reports.root))
    write(summary, {"step": 4})  # another run's results, e.g. restored by DVC: the timing is stale
    assert {r.name: r for r in project_results("p", TASK, VARIANTS, reports.root).rows}["torch"].train_seconds is None


def test_text_table_fits_120_columns_and_markdown_has_a_row_per_result(reports):
    table = project_results("p", TASK, VARIANTS, reports.root)
    text = render_text(table)
    assert max(map(len, text.splitlines())) <= 120
    markdown = render_markdown(table, with_timing=False)
    assert "train time" not in markdown
    assert len(markdown.splitlines()) == 2 + len(table.rows)


def test_series_labels_keep_only_what_tells_files_apart():
    paths = [f"reports/p/{variant}/train/plots/metrics/{split}/loss.tsv"
             for variant in ("lstm-keras", "gru-torch") for split in ("train", "eval")]
    assert report.series_labels(paths) == [
        ("lstm-keras", "train"), ("lstm-keras", "eval"), ("gru-torch", "train"), ("gru-torch", "eval")]


def test_report_figures_draw_every_definition_kind(tmp_path):
    root = tmp_path
    (root / "reports/p/a/train").mkdir(parents=True)
    (root / "reports/p/a/train/loss.tsv").write_text("step\tloss\n0\t1.0\n1\t0.5\n")
    (root / "reports/p/b/train").mkdir(parents=True)
    (root / "reports/p/b/train/loss.tsv").write_text("step\tloss\n0\t2.0\n1\t0.4\n")
    write(root / "reports/p/a/confusion.json", [{"actual": "x", "predicted": "y"}, {"actual": "x", "predicted": "x"}])
    write(root / "reports/p/a/forecast.json", [{"date": "2015-01-01", "actual": 1.0, "forecast": 2.0},
                                               {"date": "2015-01-02", "actual": 1.5, "forecast": 1.0}])
    (root / "reports/p/a/grid.png").write_bytes(b"\x89PNG")
    definitions = [
        {"p loss": {"x": "step", "y": {"reports/p/a/train/loss.tsv": "loss", "reports/p/b/train/loss.tsv": "loss"}}},
        {"reports/p/a/confusion.json": {"template": "confusion", "x": "actual", "y": "predicted"}},
        {"reports/p/a/forecast.json": {"x": "date", "y": ["actual", "forecast"]}},
        "reports/p/a/grid.png",
    ]
    drawn = report.figures(definitions, root, root / "docs/reports/p", prefix="reports/p/")
    assert [figure.title for figure in drawn] == ["p loss", "a confusion", "a forecast", "a grid"]
    assert all(figure.png.startswith(b"\x89PNG") for figure in drawn[:3])
    assert drawn[3].png is None and drawn[3].file_name == "../../../reports/p/a/grid.png"
    again = report.figures(definitions, root, root / "docs/reports/p", prefix="reports/p/")
    assert [figure.png for figure in again] == [figure.png for figure in drawn]  # same bytes every run
    page = report.markdown(ResultsTable("p", ("accuracy",), True, ()), drawn, "about")
    assert "![a grid](../../../reports/p/a/grid.png)" in page
