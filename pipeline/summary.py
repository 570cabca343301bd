"""The end of a run: one compact table per project (``python -m pipeline summary``).

A row per variant and per baseline, with the metrics the project's task names, the epochs run,
this machine's training time and the export parity; ``dvc metrics show`` still has everything.
"""
from __future__ import annotations

from pathlib import Path

from curriculum.projects import get_project, project_names
from curriculum.results import ResultsTable, caption, project_results, render_markdown, render_text


def project_tables(repo_root: Path, projects: list[str] | None = None) -> list[ResultsTable]:
    tables = []
    for name in projects or project_names():
        project = get_project(name)
        config = project.load_config(repo_root / "params.yaml")
        tables.append(project_results(name, project.task, config.variants, repo_root / "reports" / name))
    return tables


def summary_text(tables: list[ResultsTable]) -> str:
    return "\n\n".join(render_text(table) for table in tables)


def summary_markdown(tables: list[ResultsTable]) -> str:
    return "\n\n".join(f"**{caption(table)}**\n\n{render_markdown(table)}" for table in tables)
