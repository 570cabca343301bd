"""Stage 2: check the raw data with the project's great-expectations suite.

Writes a JSON report (a DVC metric) and Data Docs HTML; any failed expectation stops the
pipeline with the expectation and the offending values named.
"""
from __future__ import annotations

import sys
from pathlib import Path

from curriculum.io import write_json
from curriculum.layout import RawData
from stages.cli import load_project, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--raw", type=Path, required=True, help="directory written by the download stage")
    parser.add_argument("--report", type=Path, required=True, help="JSON validation report")
    parser.add_argument("--docs", type=Path, required=True, help="directory for the Data Docs HTML site")
    args = parser.parse_args()
    project, config = load_project(args)
    from curriculum.validation import DataValidationError, raise_for_failures, validate_tables

    tables, expectations = project.validation(RawData.read(args.raw), config)
    report = validate_tables(args.project, tables, expectations, args.docs.resolve())
    write_json(args.report, report)
    try:
        raise_for_failures(report)
    except DataValidationError as error:
        sys.exit(f"validation failed for {args.project}:\n{error}\nreport: {args.report}, docs: {args.docs}/index.html")
    print(f"{args.project}: all {report['evaluated_expectations']} expectations met; docs in {args.docs}")


if __name__ == "__main__":
    main()
