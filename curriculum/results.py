"""A project's results at a glance: one row per variant and per baseline, readable in a terminal.

The task decides the metric columns (:meth:`Task.table_metrics`, headline first); rows are
ranked by the headline. Reading the files is :func:`project_results`; the rest is pure
formatting, shared by the end of ``make run`` (text), the flow's artifact and the per-project
report (markdown).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from curriculum.io import read_json

BASELINE = "baseline"
TRAIN_SUMMARY_FILE = "metrics.json"  # DVCLive's summary of the last epoch, in the train stage's live dir
TIMING_FILE = "timing.json"  # beside it: wall-clock training time (machine-dependent: git-ignored, no DVC output)


@dataclass(frozen=True)
class ReportFiles:
    """``reports/<project>/``: the git-tracked results the stages write (dvc.yaml names the same paths)."""

    root: Path

    def baselines(self) -> Path:
        return self.root / "baselines.json"

    def validation(self) -> Path:
        return self.root / "validation.json"

    def metrics(self, variant: str) -> Path:
        return self.root / variant / "metrics.json"

    def export(self, variant: str) -> Path:
        return self.root / variant / "export.json"

    def train_summary(self, variant: str) -> Path:
        return self.root / variant / "train" / TRAIN_SUMMARY_FILE

    def train_timing(self, variant: str) -> Path:
        return self.root / variant / "train" / TIMING_FILE


@dataclass(frozen=True)
class ResultRow:
    name: str
    kind: str  # the framework of a trained variant, or BASELINE
    metrics: Mapping[str, float]
    epochs: int | None = None
    train_seconds: float | None = None
    parity: str = ""


@dataclass(frozen=True)
class ResultsTable:
    project: str
    columns: tuple[str, ...]
    higher_is_better: bool
    rows: tuple[ResultRow, ...]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def timing_record(seconds: float, resumed_from_epoch: int | None, train_summary: Path) -> dict[str, Any]:
    """What the train stage records of its run, tied to the results it produced: a later run that
    DVC restores from its cache with other results makes this record stale, not wrong."""
    return {"train_seconds": round(seconds, 1), "resumed_from_epoch": resumed_from_epoch,
            "train_summary_sha256": file_sha256(train_summary)}


def _train_seconds(files: ReportFiles, variant: str) -> float | None:
    timing, summary = files.train_timing(variant), files.train_summary(variant)
    if not (timing.exists() and summary.exists()):
        return None
    record = read_json(timing)
    return record["train_seconds"] if record.get("train_summary_sha256") == file_sha256(summary) else None


def parity_cell(export: Mapping[str, Any]) -> str:
    verdict = "ok" if export.get("passed") else "FAIL"
    difference = export.get("max_abs_diff")
    return f"{verdict} {difference:.0e}" if isinstance(difference, (int, float)) else verdict


def project_results(project: str, task: Any, variants: Mapping[str, Any], reports: Path) -> ResultsTable:
    """The table of every variant (``variants``: name -> its params, with ``framework``) and
    baseline whose results exist under ``reports``; missing files leave a variant out."""
    files = ReportFiles(reports)
    columns = task.table_metrics()
    rows = []
    for name, variant in variants.items():
        if not files.metrics(name).exists():
            continue
        summary = read_json(files.train_summary(name)) if files.train_summary(name).exists() else {}
        export = read_json(files.export(name)) if files.export(name).exists() else {}
        rows.append(ResultRow(
            name, variant.framework, _pick(read_json(files.metrics(name)), columns),
            epochs=summary["step"] + 1 if "step" in summary else None,
            train_seconds=_train_seconds(files, name),
            parity=parity_cell(export) if export else ""))
    if files.baselines().exists():
        rows += [ResultRow(name, BASELINE, _pick(scores, columns)) for name, scores in read_json(files.baselines()).items()]
    return ResultsTable(project, columns, task.higher_is_better, tuple(ranked(rows, columns[0], task.higher_is_better)))


def _pick(metrics: Mapping[str, Any], columns: Sequence[str]) -> dict[str, float]:
    return {name: float(metrics[name]) for name in columns if isinstance(metrics.get(name), (int, float))}


def ranked(rows: Sequence[ResultRow], headline: str, higher_is_better: bool) -> list[ResultRow]:
    """Best headline first; rows without it last."""
    def key(row: ResultRow) -> tuple[bool, float]:
        value = row.metrics.get(headline)
        if value is None or math.isnan(value):
            return (True, 0.0)
        return (False, -value if higher_is_better else value)
    return sorted(rows, key=key)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def _cells(table: ResultsTable, with_timing: bool) -> tuple[list[str], list[list[str]]]:
    header = ["#", "model", "kind", *table.columns, "epochs"] + (["train time"] if with_timing else []) + ["export parity"]
    body = []
    for rank, row in enumerate(table.rows, start=1):
        metrics = [f"{row.metrics[name]:.4f}" if name in row.metrics else "-" for name in table.columns]
        timing = [duration(row.train_seconds) if row.kind != BASELINE else ""] if with_timing else []
        body.append([str(rank), row.name, row.kind, *metrics, "" if row.epochs is None else str(row.epochs),
                     *timing, row.parity])
    return header, body


def result_records(table: ResultsTable) -> list[dict[str, Any]]:
    """The rows as records (a Prefect table artifact, JSON): numbers stay numbers."""
    return [{"rank": rank, "model": row.name, "kind": row.kind, **row.metrics, "epochs": row.epochs,
             "train_seconds": row.train_seconds, "export_parity": row.parity}
            for rank, row in enumerate(table.rows, start=1)]


def caption(table: ResultsTable) -> str:
    direction = "higher" if table.higher_is_better else "lower"
    return f"{table.project}: test split, ranked by {table.columns[0]} ({direction} is better)"


def render_text(table: ResultsTable, with_timing: bool = True) -> str:
    """A fixed-width table (numbers right-aligned) for terminals and logs."""
    header, body = _cells(table, with_timing)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    numeric = [i not in (1, 2) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(w) if right else cell.ljust(w)
                         for cell, w, right in zip(cells, widths, numeric)).rstrip()
    rule = "-" * sum(widths + [2 * (len(widths) - 1)])
    return "\n".join([caption(table), rule, line(header), rule, *map(line, body), rule])


def render_markdown(table: ResultsTable, with_timing: bool = True) -> str:
    header, body = _cells(table, with_timing)
    align = ["---:" if i not in (1, 2) else ":---" for i in range(len(header))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, align, *body])
