"""A project's report: one markdown page a reviewer opens, with its results table and figures.

The figures are the project's own plot definitions (:meth:`Task.plot_definitions`, the ones
``dvc plots`` shows), drawn here with matplotlib so the page needs no browser or network and
its PNGs are the same bytes on every run. Nothing in it depends on the machine: no timings.
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from curriculum.plots import figure_png, plt
from curriculum.results import ResultsTable, caption, render_markdown

LINE_STYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Figure:
    title: str
    file_name: str  # the PNG beside the report, or a path relative to the report for an image kept elsewhere
    png: bytes | None  # None: an existing image, linked


def read_records(path: Path) -> list[dict[str, Any]]:
    """A plot's data: DVCLive's TSV or a JSON list of records."""
    if path.suffix == ".tsv":
        with open(path, newline="") as handle:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle, delimiter="\t")]
    return json.loads(path.read_text())


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def series_labels(paths: list[str]) -> list[tuple[str, ...]]:
    """What tells the files of one figure apart: the path segments they don't share (for curves of
    ``reports/p/<variant>/train/plots/metrics/<split>/loss.tsv``: the variant and the split)."""
    parts = [Path(path).with_suffix("").parts for path in paths]
    length = max(len(p) for p in parts)
    padded = [p + ("",) * (length - len(p)) for p in parts]
    varying = [i for i in range(length) if len({p[i] for p in padded}) > 1]
    return [tuple(p[i] for i in varying) or (Path(paths[0]).stem,) for p in padded]


def _axis_values(values: list[Any]) -> np.ndarray:
    if values and isinstance(values[0], str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", values[0]):
        return np.array(values, dtype="datetime64[D]")
    return np.asarray(values)


def line_figure(title: str, x: str, series: list[tuple[tuple[str, ...], list[dict[str, Any]], str]]) -> bytes:
    """Lines of ``field`` against ``x``: one colour per first label part, one dash per second."""
    colours = {key: f"C{i % 10}" for i, key in enumerate(dict.fromkeys(label[0] for label, _, _ in series))}
    dashes = {key: LINE_STYLES[i % len(LINE_STYLES)]
              for i, key in enumerate(dict.fromkeys(label[1] for label, _, _ in series if len(label) > 1))}
    figure, axis = plt.subplots(figsize=(8, 4.2))
    dates = False
    for label, records, field in series:
        x_values = _axis_values([r[x] for r in records])
        dates = dates or x_values.dtype.kind == "M"
        axis.plot(x_values, [r[field] for r in records], color=colours[label[0]],
                  linestyle=dashes.get(label[1], "-") if len(label) > 1 else "-", linewidth=1.2, label=" ".join(label))
    axis.set_title(title)
    axis.set_xlabel(x)
    axis.set_ylabel(series[0][2] if len({field for _, _, field in series}) == 1 else "value")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncols=2 if len(series) > 6 else 1)
    if dates:
        figure.autofmt_xdate()
    figure.tight_layout()
    return figure_png(figure, dpi=90)


def confusion_figure(title: str, records: list[dict[str, Any]], actual: str, predicted: str) -> bytes:
    labels = sorted({str(r[actual]) for r in records} | {str(r[predicted]) for r in records})
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=int)
    for record in records:
        counts[index[str(record[actual])], index[str(record[predicted])]] += 1
    figure, axis = plt.subplots(figsize=(1.2 + 0.45 * len(labels), 1 + 0.45 * len(labels)))
    axis.imshow(counts, cmap="Blues")
    for (row, column), count in np.ndenumerate(counts):
        if count:
            axis.text(column, row, str(count), ha="center", va="center", fontsize=7,
                      color="white" if count > counts.max() / 2 else "black")
    axis.set_xticks(range(len(labels)), labels, rotation=90 if max(map(len, labels)) > 3 else 0, fontsize=8)
    axis.set_yticks(range(len(labels)), labels, fontsize=8)
    axis.set_xlabel(predicted)
    axis.set_ylabel(actual)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure_png(figure, dpi=90)


def short_title(plot_id: str, prefix: str) -> str:
    """A plot's id as a heading: a file id loses the project's directory, ``plots/`` and its suffix."""
    if "/" not in plot_id:
        return plot_id
    stem = Path(plot_id[len(prefix):] if plot_id.startswith(prefix) else plot_id).with_suffix("")
    return " ".join(part for part in stem.parts if part != "plots")


def file_name(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-") + ".png"


def figures(definitions: Iterable[Any], root: Path, report_dir: Path, prefix: str) -> list[Figure]:
    """Every plot definition drawn (or, for an image, linked); ``root`` is where the definitions'
    paths start (the repository), ``prefix`` the part of their ids left out of file names."""
    drawn = []
    for definition in definitions:
        if isinstance(definition, str):  # an image the evaluate stage rendered
            drawn.append(Figure(short_title(definition, prefix), os.path.relpath(root / definition, report_dir), None))
            continue
        (plot_id, spec), = definition.items()
        title, y = short_title(plot_id, prefix), spec["y"]
        if spec.get("template") == "confusion":
            png = confusion_figure(title, read_records(root / plot_id), spec["x"], y)
        elif isinstance(y, Mapping):  # one field from each of several files
            paths = list(y)
            series = [(label, read_records(root / path), y[path]) for label, path in zip(series_labels(paths), paths)]
            png = line_figure(title, spec["x"], series)
        else:  # several fields of one file
            records = read_records(root / plot_id)
            png = line_figure(title, spec["x"], [((field,), records, field) for field in y])
        drawn.append(Figure(title, file_name(title), png))
    return drawn


def markdown(table: ResultsTable, figures_drawn: list[Figure], about: str) -> str:
    """The page: what the project is, its results table, then every figure."""
    lines = [f"# {table.project}", "", about, "", "## Results", "", caption(table) + ":", "",
             render_markdown(table, with_timing=False), "",
             "Training times differ from machine to machine, so they are not in this file: "
             "`python -m pipeline summary` shows them for the last run here.", "", "## Figures", ""]
    for figure in figures_drawn:
        lines += [f"### {figure.title}", "", f"![{figure.title}]({figure.file_name})", ""]
    return "\n".join(lines)
