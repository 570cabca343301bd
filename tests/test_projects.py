"""The task contract: every project runs through the same generic stages, end to end, on a tiny
slice (the session's smoke repository), and each writes what its task declares."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from curriculum.projects import get_project, project_names
from pipeline.summary import project_tables, summary_text


@pytest.mark.parametrize("project", project_names())
def test_every_variant_of_every_project_is_trained_scored_and_exported(built_repo, project):
    params = yaml.safe_load((built_repo / "params.yaml").read_text())
    task = get_project(project).task
    baselines = json.loads((built_repo / f"reports/{project}/baselines.json").read_text())
    assert baselines and all(task.headline in scores for scores in baselines.values())
    for variant in params[project]["variants"]:
        reports = built_repo / f"reports/{project}/{variant}"
        metrics = json.loads((reports / "metrics.json").read_text())
        assert isinstance(metrics[task.headline], float)
        assert set(metrics["vs_baselines"]) == set(baselines)
        export = json.loads((reports / "export.json").read_text())
        assert export["passed"] and (built_repo / f"data/{project}/export/{variant}/model.onnx").stat().st_size > 0
        meta = json.loads((built_repo / f"data/{project}/models/{variant}/meta.json").read_text())
        assert meta["framework"] == params[project]["variants"][variant]["framework"]
        assert "log_every" not in meta["train"]  # display-only: not part of the model
        assert (reports / f"train/plots/metrics/eval/{task.epoch_metric}.tsv").exists()
    for definition in task.plot_definitions(project, list(params[project]["variants"])):
        files = [definition] if isinstance(definition, str) else (
            list(next(iter(definition.values()))["y"]) if isinstance(next(iter(definition.values())).get("y"), dict)
            else list(definition))
        for path in files:
            assert (built_repo / path).exists(), f"{project}: declared plot file {path} was not written"
    report_dir = built_repo / f"docs/reports/{project}"
    page = (report_dir / "README.md").read_text()
    for name in [*params[project]["variants"], *baselines]:
        assert f"| {name} |" in page, f"{project}: the report has no row for {name}"
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    assert images and all((report_dir / image).resolve().is_file() for image in images)


def test_the_end_of_run_tables_fit_a_terminal_and_show_training_times(built_repo):
    tables = project_tables(built_repo)
    assert [table.project for table in tables] == project_names()
    assert max(map(len, summary_text(tables).splitlines())) <= 120
    trained = [row for table in tables for row in table.rows if row.kind != "baseline"]
    assert trained and all(row.train_seconds is not None and row.parity.startswith("ok") for row in trained)
