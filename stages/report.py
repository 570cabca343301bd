"""Stage: the project's report, one markdown page (``README.md``) with its figures beside it.

It reads only what the other stages wrote under ``--reports`` (metrics, baselines, export
parity, curves, plot data): the results table against the baselines and every plot the task
declares, drawn as PNG. Committed in git with the metrics, so a reviewer of a commit opens one page.
"""
from __future__ import annotations

from pathlib import Path

from curriculum.frameworks.checkpoints import publish_dir, staging_dir
from curriculum.io import read_json
from curriculum.results import ReportFiles, project_results
from stages.cli import load_project, stage_parser

REPORT_FILE = "README.md"


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--reports", type=Path, required=True, help="the project's results directory (reports/<project>)")
    parser.add_argument("--out", type=Path, required=True, help="directory for README.md and its figures")
    args = parser.parse_args()
    project, config = load_project(args)
    from curriculum import report  # matplotlib: only this stage and evaluate draw

    table = project_results(args.project, project.task, config.variants, args.reports)
    figures = report.figures(project.task.plot_definitions(args.project, list(config.variants)), Path.cwd(),
                             args.out, prefix=f"{args.reports.as_posix()}/")
    validation = read_json(ReportFiles(args.reports).validation())
    about = (f"Data: {project.source(config.download.source).description} (source `{config.download.source}`). "
             f"Validation: {validation['successful_expectations']} of {validation['evaluated_expectations']} "
             f"great-expectations checks passed.")
    staged = staging_dir(args.out)  # the page and its figures are swapped in together
    staged.mkdir(parents=True)
    for figure in figures:
        if figure.png is not None:
            (staged / figure.file_name).write_bytes(figure.png)
    (staged / REPORT_FILE).write_text(report.markdown(table, figures, about))
    publish_dir(staged, args.out)
    print(f"{args.project}: report with {len(table.rows)} rows and {len(figures)} figures -> {args.out / REPORT_FILE}")


if __name__ == "__main__":
    main()
